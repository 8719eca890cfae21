"""Decisions, outcomes and the outcome values that corrections replaced.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("decided_at", sa.DateTime(), nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("phat", sa.Float(precision=53), nullable=False),
        sa.Column("business_outcome", sa.SmallInteger, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("row", sa.Integer, nullable=False),
        sa.Column("caller", sa.Text, nullable=True),
        sa.Column("record_id", sa.Text, nullable=True),
    )
    op.create_index("ix_decisions_record_time", "decisions", ["record_id", "decided_at"])
    op.create_index("ix_decisions_request_row", "decisions", ["request_id", "row"])
    op.create_index("ix_decisions_time", "decisions", ["decided_at"])
    op.create_table(
        "outcomes",
        sa.Column("decision_id", ID, sa.ForeignKey("decisions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("outcome", sa.SmallInteger, nullable=False),
        sa.Column("observed_at", sa.DateTime(), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("corrections", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "outcome_history",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("decision_id", ID, sa.ForeignKey("decisions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("outcome", sa.SmallInteger, nullable=False),
        sa.Column("observed_at", sa.DateTime(), nullable=True),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("replaced_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_outcome_history_decision", "outcome_history", ["decision_id"])


def downgrade() -> None:
    op.drop_table("outcome_history")
    op.drop_table("outcomes")
    op.drop_table("decisions")
