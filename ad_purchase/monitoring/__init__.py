"""What operators watch: Prometheus metrics, input drift against the training profile, request ids.
Monitoring is fed columns and scores by the serving layer; it never reads a request itself."""
from .drift import Drift, DriftProfile, drift_status, psi
from .metrics import Metrics, mark_worker_dead
from .request_ids import request_id
