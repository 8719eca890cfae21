"""Gunicorn settings for the prediction service.  Every value comes from the service's typed
settings (ad_purchase/serving/settings.py), read from the environment and checked there; the
defaults were chosen by measurement on a 2-core machine (see docs and bench/)."""
import atexit
import gc
import logging
import os
import shutil
import sys
import tempfile

from ad_purchase.serving.settings import Settings

_settings = Settings.from_env()
bind = f"0.0.0.0:{_settings.PORT}"
# gevent: a connection is a greenlet, so idle and slow clients cannot tie up the workers (the
# thread and sync workers need a buffering proxy in front for that); the subclass logs the
# connections it drops for sending no complete request in time.
workers = _settings.workers
worker_class = _settings.WORKER_CLASS
worker_connections = _settings.WORKER_CONNECTIONS
threads = _settings.THREADS
preload_app = True                   # load and verify the model once, before forking; workers share it
timeout = _settings.TIMEOUT
graceful_timeout = _settings.GRACEFUL_TIMEOUT
# Seconds an idle kept-alive connection stays open, and the time a client has to send a request's
# headers (the gevent worker closes the connection after that).
keepalive = _settings.KEEPALIVE
# Recycle workers to bound slow leaks; they take turns at least 10 s apart (worker.py), so they never
# restart together.  Each recycled worker leaves its metric file (about 256 KB) in
# PROMETHEUS_MULTIPROC_DIR, hence a high count.
max_requests = _settings.MAX_REQUESTS
max_requests_jitter = _settings.MAX_REQUESTS_JITTER
# TLS for an instance exposed without a proxy in front: both files or neither (checked in Settings).
certfile = _settings.CERT_FILE or None
keyfile = _settings.KEY_FILE or None
accesslog = None                     # the app writes one JSON line per request itself (api.access)
errorlog = "-"
control_socket_disable = True       # nothing here uses gunicornc, and $HOME may be read-only
worker_tmp_dir = _settings.WORKER_TMP_DIR

# Prometheus counters from every worker go to files in one folder, which /metrics adds up.  The
# folder must be set before the app (and prometheus_client) is imported, and start empty.
_OWN_METRICS_PREFIX = os.path.join(tempfile.gettempdir(), "ad-purchase-metrics-")
_master = os.getpid()
_metrics_dir = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", f"{_OWN_METRICS_PREFIX}{_master}")
# Where workers note when one of them last restarted for max_requests (one at a time, see worker.py).
_recycle_file = os.path.join(worker_tmp_dir, f"ad-purchase-recycle-{_master}")
# SIGHUP makes gunicorn read this file again in the running master, where the app is already
# loaded (preload): the live workers' metric files must stay, and the exit hook is registered once.
_reloading = "api" in sys.modules
if not _reloading:
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir, exist_ok=True)

    @atexit.register
    def _remove_own_files():
        """The metric files belong to this server only: gone when the master exits, also when it
        stops before serving (a missing MODEL_DIR).  Workers exit through here too, hence the pid."""
        if os.getpid() == _master:
            if _metrics_dir.startswith(_OWN_METRICS_PREFIX):
                shutil.rmtree(_metrics_dir, ignore_errors=True)
            try:
                os.unlink(_recycle_file)
            except OSError:
                pass


def when_ready(server):
    """The model is loaded (preload_app): move it out of the garbage collector's sight, so workers
    share its memory pages instead of copying them when the collector touches them, and exit fast.
    Only now is the service really there, so this is where it says so."""
    gc.freeze()
    logging.getLogger("api").info("ready: serving on port %s", _settings.PORT)


def post_fork(server, worker):
    """In the new worker: a stop signal that arrives before the worker sets up its own handling
    lands in this process's copy of the master's signal queue; the worker looks there.  The
    recycle file lets workers take turns restarting."""
    worker.early_signals = server.SIG_QUEUE
    worker.recycle_file = _recycle_file


def on_reload(server):
    """SIGHUP: read AUTH_TOKENS_FILE again in the master, before gunicorn forks the new workers
    (they inherit the table; the old ones finish their requests and go)."""
    from ad_purchase.serving.auth import reload_token_files
    reload_token_files()


def child_exit(server, worker):
    """A worker's live gauges must not outlive it."""
    from ad_purchase.monitoring import mark_worker_dead
    mark_worker_dead(worker.pid, _metrics_dir)



def worker_exit(server, worker):
    """The worker has served its last request and logged its last line.  What remains is the
    interpreter's teardown, where gevent's patched locks are already gone when logging cleans
    up its handlers, which prints a harmless but alarming traceback per handler: not reported."""
    sys.unraisablehook = lambda unraisable: None
