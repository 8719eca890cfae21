r"""How well each model version decides: realized (against reported outcomes) and expected (from
phat alone, as if the model were calibrated).

    realized   over the decisions that have an outcome
    expected   over every decision in the window: each decision counts as phat of a buyer and
               1 - phat of a non-buyer, so no outcome is needed

Both carry the same figures:

    auc                  ranking quality (ties count half)
    log_loss, brier      mean cross-entropy and squared error of phat
    precision_at_cutoff  buyers among the decisions with business_outcome = 1
    recall_at_cutoff     share of all buyers that business_outcome = 1 reached
    lift_at_cutoff       precision_at_cutoff over the base rate
    calibration          ten bins of phat (0-0.1, ..., 0.9-1): count, mean phat, outcome rate

A realized AUC well below the expected one means the model ranks worse than it believes it
does: the alarm (see the alert rules in deploy/prometheus).  A figure that cannot be computed
(AUC with buyers only, say) is null.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from scipy.stats import rankdata
from sqlalchemy import select

from .store import decisions, outcomes

BINS = 10
EPS = np.finfo(np.float64).eps      # phat is clipped this far from 0 and 1 in the log loss


def _clean(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def calibration(phat: np.ndarray, rate_of: np.ndarray) -> list[dict]:
    """Ten equal-width bins: count, mean phat and mean of `rate_of` (outcomes, or phat itself)."""
    index = np.minimum((phat * BINS).astype(int), BINS - 1)
    counts = np.bincount(index, minlength=BINS)
    phat_sum = np.bincount(index, weights=phat, minlength=BINS)
    rate_sum = np.bincount(index, weights=rate_of, minlength=BINS)
    bins = []
    for i in range(BINS):
        n = int(counts[i])
        bins.append({"lower": i / BINS, "upper": (i + 1) / BINS, "count": n,
                     "mean_phat": float(phat_sum[i] / n) if n else None,
                     "outcome_rate": float(rate_sum[i] / n) if n else None})
    return bins


def realized(phat: np.ndarray, decided: np.ndarray, outcome: np.ndarray) -> dict[str, Any]:
    """The figures of decisions with their outcomes (1 = bought)."""
    n = len(phat)
    if n == 0:
        return _empty()
    positives = int(outcome.sum())
    negatives = n - positives
    auc = None
    if positives and negatives:
        ranks = rankdata(phat)           # average ranks: tied scores count half, as ROC AUC does
        auc = (ranks[outcome == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)
    clipped = np.clip(phat, EPS, 1 - EPS)
    log_loss = -np.mean(outcome * np.log(clipped) + (1 - outcome) * np.log1p(-clipped))
    brier = np.mean((phat - outcome) ** 2)
    chosen = decided == 1
    hits = int(outcome[chosen].sum())
    precision = hits / int(chosen.sum()) if chosen.any() else None
    recall = hits / positives if positives else None
    base = positives / n
    lift = precision / base if precision is not None and base > 0 else None
    return {"auc": _clean(auc), "log_loss": _clean(log_loss), "brier": _clean(brier),
            "precision_at_cutoff": _clean(precision), "recall_at_cutoff": _clean(recall),
            "lift_at_cutoff": _clean(lift), "outcome_rate": base,
            "calibration": calibration(phat, outcome.astype(float))}


def expected(phat: np.ndarray, decided: np.ndarray) -> dict[str, Any]:
    """The figures a calibrated model would realize on these decisions, on average: decision i is
    phat_i of a buyer and 1 - phat_i of a non-buyer."""
    n = len(phat)
    if n == 0:
        return _empty()
    order = np.argsort(phat, kind="stable")
    p = phat[order]
    q = 1 - p
    # Pairs (buyer i, non-buyer j) with phat_i > phat_j, weighted p_i * q_j; equal phats count
    # half; a decision is never paired with itself.
    values, starts, counts = np.unique(p, return_index=True, return_counts=True)
    group_p = np.add.reduceat(p, starts)
    group_q = np.add.reduceat(q, starts)
    below_q = np.concatenate(([0.0], np.cumsum(group_q)[:-1]))
    self_pairs = np.add.reduceat(p * q, starts)
    concordant = np.sum(group_p * below_q) + 0.5 * np.sum(group_p * group_q - self_pairs)
    pairs = p.sum() * q.sum() - np.sum(p * q)
    auc = concordant / pairs if pairs > 0 else None
    clipped = np.clip(phat, EPS, 1 - EPS)
    log_loss = -np.mean(phat * np.log(clipped) + (1 - phat) * np.log1p(-clipped))
    brier = np.mean(phat * (1 - phat))
    chosen = decided == 1
    buyers = phat.sum()
    precision = phat[chosen].mean() if chosen.any() else None
    recall = phat[chosen].sum() / buyers if buyers > 0 else None
    base = buyers / n
    lift = precision / base if precision is not None and base > 0 else None
    return {"auc": _clean(auc), "log_loss": _clean(log_loss), "brier": _clean(brier),
            "precision_at_cutoff": _clean(precision), "recall_at_cutoff": _clean(recall),
            "lift_at_cutoff": _clean(lift), "outcome_rate": float(base), "calibration": calibration(phat, phat)}


def _empty() -> dict[str, Any]:
    return {"auc": None, "log_loss": None, "brier": None, "precision_at_cutoff": None, "recall_at_cutoff": None,
            "lift_at_cutoff": None, "outcome_rate": None, "calibration": calibration(np.zeros(0), np.zeros(0))}


@dataclass
class Frame:
    """Decisions as arrays: time, version, phat, business outcome, outcome (-1 = none yet)."""

    decided_at: np.ndarray
    version: np.ndarray
    phat: np.ndarray
    business_outcome: np.ndarray
    outcome: np.ndarray


def figures(frame: Frame) -> dict[str, Any]:
    known = frame.outcome >= 0
    return {"decisions": int(len(frame.phat)), "with_outcome": int(known.sum()),
            "realized": realized(frame.phat[known], frame.business_outcome[known], frame.outcome[known]),
            "expected": expected(frame.phat, frame.business_outcome)}


def _subset(frame: Frame, mask: np.ndarray) -> Frame:
    return Frame(frame.decided_at[mask], frame.version[mask], frame.phat[mask], frame.business_outcome[mask],
                 frame.outcome[mask])


def week_start(moment: datetime) -> datetime:
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def report(frame: Frame, by_week: bool = False) -> dict[str, Any]:
    """{"by_version": [{"version", "decisions", "with_outcome", "realized", "expected"[, "weeks"]}]}"""
    by_version = []
    for version in sorted(set(frame.version.tolist())):
        part = _subset(frame, frame.version == version)
        entry = {"version": version, **figures(part)}
        if by_week:
            weeks = np.array([week_start(moment) for moment in part.decided_at.tolist()], dtype=object)
            entry["weeks"] = [{"week_start": start.date().isoformat(), **figures(_subset(part, weeks == start))}
                              for start in sorted(set(weeks.tolist()))]
        by_version.append(entry)
    return {"by_version": by_version}


def load(connection, since: datetime | None = None, until: datetime | None = None,
         version: str | None = None) -> Frame:
    """Decisions in [since, until) of `version` (all when None), each with its outcome or -1."""
    query = (select(decisions.c.decided_at, decisions.c.model_version, decisions.c.phat,
                    decisions.c.business_outcome, outcomes.c.outcome)
             .select_from(decisions.outerjoin(outcomes, outcomes.c.decision_id == decisions.c.id)))
    rows = connection.execute(_window(query, since, until, version)).all()
    return from_rows(rows)


def _window(query, since, until, version):
    """`query` narrowed to decisions in [since, until) of `version` (each None: no bound)."""
    if since is not None:
        query = query.where(decisions.c.decided_at >= since)
    if until is not None:
        query = query.where(decisions.c.decided_at < until)
    if version is not None:
        query = query.where(decisions.c.model_version == version)
    return query


def count(connection, since: datetime | None = None, until: datetime | None = None,
          version: str | None = None) -> int:
    from sqlalchemy import func
    return connection.execute(_window(select(func.count()).select_from(decisions), since, until, version)).scalar()


def weeks(connection, since, until, version) -> list[tuple[datetime, datetime]]:
    """The weeks (Monday to Monday, cut to the window) that hold decisions of the window."""
    from sqlalchemy import func
    first, last = connection.execute(_window(select(func.min(decisions.c.decided_at), func.max(decisions.c.decided_at)),
                                             since, until, version)).one()
    if first is None:
        return []
    first, last = (moment if isinstance(moment, datetime) else datetime.fromisoformat(moment) for moment in (first, last))
    found, start = [], week_start(first)
    while start <= last:
        end = start + timedelta(days=7)
        found.append((max(start, since) if since else start, min(end, until) if until else end))
        start = end
    return found


def from_rows(rows) -> Frame:
    if not rows:
        return Frame(np.zeros(0, dtype=object), np.zeros(0, dtype=object), np.zeros(0), np.zeros(0, dtype=int),
                     np.zeros(0, dtype=int))
    decided, version, phat, chosen, outcome = zip(*rows)
    return Frame(np.array(decided, dtype=object), np.array(version, dtype=object), np.array(phat, dtype=float),
                 np.array(chosen, dtype=int), np.array([-1 if o is None else o for o in outcome], dtype=int))


# ---------------------------------------------------------------------------- binned figures
#
# The exact figures above need every decision of the window in memory.  For large windows (and
# for the Prometheus gauges, computed at every scrape) the database adds the decisions up instead,
# in FINE_BINS bins of phat per version, business outcome and outcome; the figures come from those
# sums.  Counts, Brier, precision, recall, lift and calibration stay exact; AUC counts decisions in
# one fine bin as ties and log loss uses each bin's mean phat (both differ from the exact figures
# by far less than anything an alert looks at).

FINE_BINS = 10_000


def load_binned(connection, since: datetime | None = None, until: datetime | None = None,
                version: str | None = None) -> list[tuple]:
    """(version, bin, business_outcome, outcome or None, count, sum of phat, sum of phat squared)."""
    from sqlalchemy import Integer, cast, func

    scaled = decisions.c.phat * FINE_BINS
    bucket = cast(scaled, Integer) if connection.dialect.name == "sqlite" else cast(func.floor(scaled), Integer)
    bucket = bucket.label("bucket")
    query = (select(decisions.c.model_version, bucket, decisions.c.business_outcome, outcomes.c.outcome,
                    func.count(), func.sum(decisions.c.phat), func.sum(decisions.c.phat * decisions.c.phat))
             .select_from(decisions.outerjoin(outcomes, outcomes.c.decision_id == decisions.c.id))
             .group_by(decisions.c.model_version, bucket, decisions.c.business_outcome, outcomes.c.outcome))
    return [tuple(row) for row in connection.execute(_window(query, since, until, version))]


def _binned_auc(bins: np.ndarray, weight_pos: np.ndarray, weight_neg: np.ndarray, self_pairs: float = 0.0):
    """AUC of positives against negatives weighted per bin, ties within a bin counting half."""
    pos = np.bincount(bins, weights=weight_pos, minlength=FINE_BINS + 1)
    neg = np.bincount(bins, weights=weight_neg, minlength=FINE_BINS + 1)
    below = np.concatenate(([0.0], np.cumsum(neg)[:-1]))
    pairs = pos.sum() * neg.sum() - self_pairs
    if pairs <= 0:
        return None
    return float((np.sum(pos * below) + 0.5 * (np.sum(pos * neg) - self_pairs)) / pairs)


def _binned_figures(rows: list[tuple]) -> dict[str, Any]:
    if not rows:
        return {"decisions": 0, "with_outcome": 0, "realized": _empty(), "expected": _empty()}
    _, bucket, chosen, outcome, count, phat_sum, square_sum = (np.array(column, dtype=object) for column in zip(*rows))
    bucket = np.minimum(bucket.astype(int), FINE_BINS)
    chosen = chosen.astype(int)
    count = count.astype(float)
    phat_sum, square_sum = phat_sum.astype(float), square_sum.astype(float)
    mean = phat_sum / count
    known = np.array([o is not None for o in outcome])
    y = np.array([0 if o is None else o for o in outcome], dtype=float)

    def figures_of(n, positives, p_sum, squares, cross, hits, picked, bins, w_pos, w_neg, self_pairs,
                   log_terms, cal_rate) -> dict[str, Any]:
        if n == 0:
            return _empty()
        precision = hits / picked if picked else None
        base = positives / n
        lift = precision / base if precision is not None and base > 0 else None
        decile = np.minimum(bins // (FINE_BINS // BINS), BINS - 1)
        counts = np.bincount(decile, weights=cal_rate[0], minlength=BINS)
        phats = np.bincount(decile, weights=cal_rate[1], minlength=BINS)
        rates = np.bincount(decile, weights=cal_rate[2], minlength=BINS)
        calibration = [{"lower": i / BINS, "upper": (i + 1) / BINS, "count": int(counts[i]),
                        "mean_phat": float(phats[i] / counts[i]) if counts[i] else None,
                        "outcome_rate": float(rates[i] / counts[i]) if counts[i] else None} for i in range(BINS)]
        return {"auc": _binned_auc(bins, w_pos, w_neg, self_pairs), "log_loss": _clean(log_terms / n),
                "brier": _clean((squares - 2 * cross + positives) / n), "precision_at_cutoff": _clean(precision),
                "recall_at_cutoff": _clean(hits / positives) if positives else None, "lift_at_cutoff": _clean(lift),
                "outcome_rate": float(base), "calibration": calibration}

    clipped = np.clip(mean, EPS, 1 - EPS)
    k = known
    real = figures_of(count[k].sum(), (count * y)[k].sum(), phat_sum[k].sum(), square_sum[k].sum(),
                      (phat_sum * y)[k].sum(), (count * y)[k & (chosen == 1)].sum(), count[k & (chosen == 1)].sum(),
                      bucket[k], (count * y)[k], (count * (1 - y))[k], 0.0,
                      -np.sum((count * (y * np.log(clipped) + (1 - y) * np.log1p(-clipped)))[k]),
                      (count[k], phat_sum[k], (count * y)[k]))
    entropy = -(mean * np.log(clipped) + (1 - mean) * np.log1p(-clipped))
    expect = figures_of(count.sum(), phat_sum.sum(), phat_sum.sum(), square_sum.sum(), square_sum.sum(),
                        phat_sum[chosen == 1].sum(), count[chosen == 1].sum(),
                        bucket, phat_sum, count - phat_sum, float(np.sum(phat_sum - square_sum)),
                        float(np.sum(count * entropy)), (count, phat_sum, phat_sum))
    # Expected Brier is the mean of phat (1 - phat): sum(p) - sum(p^2), which figures_of gives as
    # (sum p^2 - 2 sum p^2 + sum p) / n.
    return {"decisions": int(count.sum()), "with_outcome": int(count[k].sum()), "realized": real, "expected": expect}


def report_binned(rows: list[tuple]) -> dict[str, Any]:
    """The report of `report`, from load_binned's sums."""
    by_version = []
    for version in sorted({row[0] for row in rows}):
        by_version.append({"version": version, **_binned_figures([row for row in rows if row[0] == version])})
    return {"by_version": by_version}


def compute(connection, since: datetime | None = None, until: datetime | None = None, version: str | None = None,
            by_week: bool = False, exact_rows: int = 1_000_000) -> dict[str, Any]:
    """The report of a window: exact from every decision when it holds at most `exact_rows` of
    them, else from the database's sums per fine bin of phat (`method` says which)."""
    if count(connection, since, until, version) <= exact_rows:
        return {**report(load(connection, since, until, version), by_week), "method": "exact"}
    body = report_binned(load_binned(connection, since, until, version))
    if by_week:
        for entry in body["by_version"]:
            entry["weeks"] = []
            for start, end in weeks(connection, since, until, entry["version"]):
                (week,) = report_binned(load_binned(connection, start, end, entry["version"]))["by_version"]
                week.pop("version")
                entry["weeks"].append({"week_start": start.date().isoformat(), **week})
    return {**body, "method": "binned"}
