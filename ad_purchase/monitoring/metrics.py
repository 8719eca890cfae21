"""Prometheus metrics, correct across gunicorn workers.

In multi-process mode (gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR, which prometheus_client
reads), every worker writes its counters to files there and /metrics adds them up.
"""
from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily

PHAT_BINS = 20
# Methods counted by name; any other (a client may send any token as a method) counts as "other",
# so a label's values come from a closed set.
KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


class Metrics:
    """The metric objects of one app."""

    def __init__(self, model_name: str, model_version: str, multiprocess: bool = False) -> None:
        self.multiprocess = multiprocess
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("http_requests_total", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("http_request_duration_seconds", "Request latency by route", ["route"],
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10),
                                 registry=r)
        self.rows = Counter("predict_rows_total", "Rows scored", registry=r)
        self.validation_failures = Counter("predict_validation_failures_total",
                                           "Invalid field values by field", ["field"], registry=r)
        self.phat = Counter("predict_phat_bin_total", "Scored rows by predicted probability bin (upper edge)",
                            ["le"], registry=r)
        self.outcomes = Counter("predict_business_outcome_total", "Scored rows by business outcome",
                                ["outcome"], registry=r)
        self.drift_counts = Counter("input_drift_observations_total",
                                    "Incoming values per field and training bin", ["field", "bin"], registry=r)
        info = Gauge("model_info", "The served model", ["name", "version"], registry=r, multiprocess_mode="max")
        info.labels(model_name, model_version).set(1)
        # Labelled children looked up once: a label lookup costs more than the increment itself.
        self._phat_bins = [self.phat.labels(f"{(i + 1) / PHAT_BINS:.2f}") for i in range(PHAT_BINS)]
        self._outcome = [self.outcomes.labels("0"), self.outcomes.labels("1")]
        self._request_children: dict[tuple[str, str, int], tuple] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method if method in KNOWN_METHODS else "other", status)
        children = self._request_children.get(key)
        if children is None:   # routes are the app's own (or "unmatched"), so this stays small
            children = self._request_children[key] = (self.requests.labels(key[0], key[1], str(status)),
                                                       self.latency.labels(route))
        children[0].inc()
        children[1].observe(seconds)

    def observe_invalid(self, errors: list[dict]) -> None:
        for error in errors:
            self.validation_failures.labels(error["field"]).inc()

    def observe_scores(self, phat: np.ndarray, outcome: np.ndarray) -> None:
        self.rows.inc(len(phat))
        counts = np.bincount(np.minimum(phat * PHAT_BINS, PHAT_BINS - 1).astype(int), minlength=PHAT_BINS)
        for index in np.flatnonzero(counts):
            self._phat_bins[index].inc(int(counts[index]))
        buyers = int(np.count_nonzero(outcome))
        if buyers:
            self._outcome[1].inc(buyers)
        if len(phat) - buyers:
            self._outcome[0].inc(len(phat) - buyers)

    def collected(self) -> CollectorRegistry:
        """Every worker's metrics (this one's alone outside gunicorn)."""
        if not self.multiprocess:
            return self.registry
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)
        return combined

    def exposition(self, psi: dict[str, float] | None = None) -> bytes:
        """The text /metrics answers, with each field's population stability index when given."""
        text = generate_latest(self.collected())
        if psi is None:
            return text
        family = GaugeMetricFamily("input_drift_psi", "Population stability index of each input field "
                                   "against the training profile", labels=["field"])
        for field, value in psi.items():
            family.add_metric([field], value)
        extra = CollectorRegistry()
        extra.register(_Fixed([family]))
        return text + generate_latest(extra)


class _Fixed:
    """A collector that yields metric families computed elsewhere."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        return iter(self.families)


def mark_worker_dead(pid: int, metrics_dir: str) -> None:
    """A worker's live gauges must not outlive it (gunicorn.conf.py calls this when one exits)."""
    multiprocess.mark_process_dead(pid, metrics_dir)
