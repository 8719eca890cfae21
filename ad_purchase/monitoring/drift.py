"""Input drift: incoming values counted into the training bins, compared by population stability index.

Each worker counts a sample of incoming rows into the training deciles of every numeric field
and the training levels of every categorical field, and adds its counts to shared counters every
few seconds.  The PSI of a field compares those counts with the training shares in
metadata.json: below 0.1 the field is stable, 0.1 to 0.2 is worth watching, above 0.2 it has
shifted.  Rows arrive as columns; nothing here reads a request.
"""
from __future__ import annotations

import random
import threading
import time
import numpy as np

from ..schema import CATEGORICAL_FIELDS, CATEGORICAL_LEVELS, MIN_DRIFT_ROWS, NUMERIC_FIELDS, PSI_ALERT, PSI_WATCH
# Rows a worker bins per flush at most; beyond it, a uniform sample of the rows offered since the
# last flush (reservoir sampling), so a flush costs the same at any request rate.  A reservoir of
# k rows reads about k * (1 + ln(offered / k)) of them, so a small k keeps busy workers from
# reading most rows twice; 200 per flush (DRIFT_FLUSH_SECONDS, 5 by default) per worker is still
# thousands of rows a minute for PSI.
DRIFT_ROWS_PER_FLUSH = 200
_EPSILON = 1e-4               # share floor, so an empty bin does not make the index infinite


def psi(expected: np.ndarray, observed_counts: np.ndarray) -> float:
    total = observed_counts.sum()
    if total == 0:
        return 0.0
    actual = np.clip(observed_counts / total, _EPSILON, None)
    expected = np.clip(expected, _EPSILON, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def drift_status(value: float, rows: int) -> str:
    if rows < MIN_DRIFT_ROWS:
        return "insufficient data"
    return "alert" if value > PSI_ALERT else "watch" if value > PSI_WATCH else "ok"


class DriftProfile:
    """Training bins of every field, from metadata.json."""

    def __init__(self, metadata: dict) -> None:
        numeric = metadata["numeric_fields"]
        self.edges = {f: np.asarray(numeric[f]["edges"], dtype=float) for f in NUMERIC_FIELDS}
        self.expected = {f: np.asarray(numeric[f]["shares"], dtype=float) for f in NUMERIC_FIELDS}
        categorical = metadata["categorical_fields"]
        for field in CATEGORICAL_FIELDS:
            shares = categorical[field]
            # bin k = level code k; the last bin is "missing"
            self.expected[field] = np.array([shares.get(level, 0.0) for level in CATEGORICAL_LEVELS[field]]
                                            + [shares.get("nan", 0.0)])

    def bins(self, field: str) -> int:
        return len(self.expected[field])


class Drift:
    """A worker's drift counting: rows offered per request (a few evenly spaced ones, chosen
    where the rows were decoded), kept in a uniform sample, binned in bulk at each flush into
    `counter` (a Prometheus counter labelled field and bin, shared by the workers)."""

    def __init__(self, profile: DriftProfile, counter, flush_seconds: float = 5.0) -> None:
        self.profile, self.counter, self.flush_seconds = profile, counter, flush_seconds
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []    # (96 numeric values, 4 codes) per kept row
        self._offered = 0                  # rows offered since the last flush
        self._random = random.Random()
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()

    def offer(self, numeric: np.ndarray, codes: np.ndarray) -> None:
        """Rows of a request: every numeric field (schema order) and the level codes.  Up to
        DRIFT_ROWS_PER_FLUSH are kept, then each one replaces a kept row with the probability that
        keeps the sample uniform.  Flushes first when a flush is due."""
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()
        with self._lock:
            for values, levels in zip(numeric, codes):
                self._offered += 1
                if len(self._pending) < DRIFT_ROWS_PER_FLUSH:
                    self._pending.append((values, levels))
                    continue
                place = self._random.randrange(self._offered)
                if place < DRIFT_ROWS_PER_FLUSH:
                    self._pending[place] = (values, levels)

    def flush(self) -> None:
        """Bin the rows set aside since the last flush and add the counts to the shared counter."""
        with self._lock:
            pending, self._pending, self._offered = self._pending, [], 0
            self._last_flush = time.monotonic()
        if not pending:
            return
        numeric = np.array([row for row, _ in pending])
        codes = np.array([row for _, row in pending])
        for position, field in enumerate(NUMERIC_FIELDS):
            values = numeric[:, position]
            counts = np.bincount(np.searchsorted(self.profile.edges[field], values[~np.isnan(values)], side="right"),
                                 minlength=self.profile.bins(field))
            self._add(field, counts)
        for position, field in enumerate(CATEGORICAL_FIELDS):
            missing_bin = self.profile.bins(field) - 1
            levels = np.where(codes[:, position] < 0, missing_bin, codes[:, position]).astype(int)
            self._add(field, np.bincount(levels, minlength=self.profile.bins(field)))

    def _add(self, field: str, counts: np.ndarray) -> None:
        for index in np.flatnonzero(counts):
            self.counter.labels(field, str(index)).inc(int(counts[index]))

    def counts_by_field(self, registry) -> dict[str, np.ndarray]:
        """Counts of every worker as `registry` (the collected metrics) holds them, this worker's
        pending rows included."""
        self.flush()
        counts = {f: np.zeros(self.profile.bins(f), dtype=np.int64) for f in self.profile.expected}
        for family in registry.collect():
            if family.name != "input_drift_observations":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    field, index = sample.labels["field"], int(sample.labels["bin"])
                    if field in counts and index < len(counts[field]):
                        counts[field][index] += int(sample.value)
        return counts

    def report(self, registry) -> dict:
        fields = {}
        for field, observed in self.counts_by_field(registry).items():
            value = psi(self.profile.expected[field], observed)
            rows = int(observed.sum())
            fields[field] = {"psi": round(value, 6), "rows": rows, "status": drift_status(value, rows)}
        return {"thresholds": {"watch": PSI_WATCH, "alert": PSI_ALERT, "min_rows": MIN_DRIFT_ROWS},
                "alerts": sorted(f for f, v in fields.items() if v["status"] == "alert"),
                "fields": fields}
