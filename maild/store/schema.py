"""Which schema revision this maild needs, and the error when a database is not at it.

Kept apart from ``maild.store.db`` so that a reader without SQLAlchemy (the
CLI's SQLite fast path, ``maild.store.sqlite_read``) checks the schema exactly
as :func:`maild.store.db.check_schema` does.
"""

from __future__ import annotations

__all__ = ["HEAD", "SchemaError", "schema_error"]

# The newest migration. Checked against Alembic by a test; kept here so that
# every CLI call can check the schema without importing Alembic (a fifth of
# a second) or SQLAlchemy.
HEAD = "0003"


class SchemaError(RuntimeError):
    """The database schema is missing or older than this version of maild."""


def schema_error(current: str | None, head: str = HEAD) -> SchemaError | None:
    """The error for a database at revision ``current`` (None: no maild schema), or None."""
    if current == head:
        return None
    if current is None:
        return SchemaError("the database has no maild schema yet: run `maild db upgrade`")
    return SchemaError(
        f"the database schema is at revision {current}, this maild needs {head}: "
        "run `maild db upgrade`"
    )
