"""Persistence: every query and write, the schema managed by Alembic.

- ``models``      the ORM tables
- ``db``          engines, sessions, ``maild db upgrade``; ``schema`` the version check
- ``queries``     what the CLI and the scheduler read (the queue, a ticket, the outbox)
- ``sqlite_read`` ``maild queue`` on SQLite without importing SQLAlchemy
- ``serialize``   the one ticket-to-dict shape (JSON output, both queue paths)
- ``views``       the one ORM-to-view mapper (what the pure core sees of a ticket)
- ``ticketstate`` what commands and the lifecycle decided, written back on a ticket
- ``timeline``    the one timeline writer (``record``, ``set_fields``, ``move``)
- ``dues``        a ticket's stored due times kept in step with its state
- ``reports``     post-mortems, weekly reports, budgets
- ``inline``      SQLite transactions in one store thread (``StoreThread``)
"""
