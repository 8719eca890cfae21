"""Alembic's environment: migrations run on the connection the service hands over."""
from alembic import context
from sqlalchemy import text

from ad_purchase.decisions.store import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        # Replicas starting together: one migrates, the others wait and then find nothing to do.
        connection.execute(text("SELECT pg_advisory_xact_lock(727172)"))
    context.run_migrations()
