"""Decisions and outcomes: a record of every decision the service makes, the outcomes the client
reports back weeks later, and the realized and expected performance of each model version.

    store        the tables (SQLAlchemy Core), engines, migrations (Alembic) and retention
    log          DecisionLog: group-committed writes from the request path
    outcomes     reading, checking and attaching reported outcomes to decisions
    performance  realized and expected figures per model version
    cli          python -m ad_purchase.decisions: load outcomes, print and plot performance
"""
from .log import MODES, DecisionLog, DecisionLogUnavailable

__all__ = ["MODES", "DecisionLog", "DecisionLogUnavailable"]
