"""Gunicorn settings for the prediction service.  Every value can be set from the environment;
the defaults were chosen by measurement on a 2-core machine (see the README's Performance section)."""
import gc
import os
import shutil
import tempfile

bind = f"0.0.0.0:{os.environ.get('PORT', '1313')}"
# Measured on 2 cores (bench/http_bench.py): 2 gthread workers x 4 threads served the most
# single-record requests in most runs (keep-alive), up to 41% more than 2 or 4 sync workers; in
# quiet runs the three are within 3-10%, and 2 sync workers once led by 3%.
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("THREADS", "4"))
worker_class = os.environ.get("WORKER_CLASS", "gthread")
preload_app = True                   # load and verify the model once, before forking; workers share it
timeout = int(os.environ.get("TIMEOUT", "60"))                 # a 10,000-row batch takes well under 1 s
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "30"))  # SIGTERM: in-flight requests finish
keepalive = 5
# Recycle workers to bound slow leaks, with jitter so they do not restart at once.  Each recycled
# worker leaves its metric file (about 256 KB) in PROMETHEUS_MULTIPROC_DIR, hence a high count.
max_requests = int(os.environ.get("MAX_REQUESTS", "50000"))
max_requests_jitter = int(os.environ.get("MAX_REQUESTS_JITTER", "5000"))
accesslog = None                     # the app writes one JSON line per request itself (api.access)
errorlog = "-"
control_socket_disable = True       # nothing here uses gunicornc, and $HOME may be read-only
worker_tmp_dir = os.environ.get("WORKER_TMP_DIR", tempfile.gettempdir())  # heartbeat files; /tmp is writable

# Prometheus counters from every worker go to files in one folder, which /metrics adds up.  The
# folder must be set before the app (and prometheus_client) is imported, and start empty.
_metrics_dir = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR",
                                     os.path.join(tempfile.gettempdir(), f"ad-purchase-metrics-{os.getpid()}"))
shutil.rmtree(_metrics_dir, ignore_errors=True)
os.makedirs(_metrics_dir, exist_ok=True)


def when_ready(server):
    """The model is loaded (preload_app): move it out of the garbage collector's sight, so workers
    share its memory pages instead of copying them when the collector touches them, and exit fast."""
    gc.freeze()


def on_exit(server):
    """The metric files belong to this server only."""
    if _metrics_dir.startswith(os.path.join(tempfile.gettempdir(), "ad-purchase-metrics-")):
        shutil.rmtree(_metrics_dir, ignore_errors=True)


def child_exit(server, worker):
    """A worker's live gauges must not outlive it."""
    from observability import mark_worker_dead
    mark_worker_dead(worker.pid)
