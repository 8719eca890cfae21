"""Gunicorn settings for the prediction service; every value can be set from the environment."""
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '1313')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("THREADS", "1"))
worker_class = os.environ.get("WORKER_CLASS", "sync")
preload_app = True            # load and verify the model once, before forking; workers share it
timeout = int(os.environ.get("TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))
keepalive = 5
max_requests = int(os.environ.get("MAX_REQUESTS", "0"))
max_requests_jitter = int(os.environ.get("MAX_REQUESTS_JITTER", "0"))
accesslog = os.environ.get("ACCESS_LOG", "-")
errorlog = "-"
