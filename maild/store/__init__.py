"""Persistence: models, engine and queries, schema managed by Alembic."""
