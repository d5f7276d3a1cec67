"""Alembic environment: runs migrations on the engine maild hands it.

maild calls Alembic programmatically (``maild db upgrade``) and passes an open
synchronous connection in ``config.attributes["connection"]``; there is no
alembic.ini to keep in sync.
"""

from __future__ import annotations

from alembic import context

from maild.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable by running alembic by hand
    raise RuntimeError("run migrations with `maild db upgrade`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
