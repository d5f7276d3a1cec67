"""lease epochs (fencing), outbox claims, and a NOTIFY for new outbox rows

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# PostgreSQL only: every instance LISTENs on this channel and starts a sending
# pass when it fires. A trigger rather than code, so that whoever queues mail
# (the daemon, the CLI, `maild outbox --retry`, an operator's SQL) wakes them,
# and the notification goes out with the commit, never before it.
_NOTIFY = (
    """CREATE OR REPLACE FUNCTION maild_outbox_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('maild_outbox', '');
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER maild_outbox_inserted AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION maild_outbox_notify()""",
    """CREATE TRIGGER maild_outbox_requeued AFTER UPDATE OF status ON outbox
    FOR EACH ROW WHEN (NEW.status = 'queued' AND OLD.status <> 'queued')
    EXECUTE FUNCTION maild_outbox_notify()""",
)


def upgrade() -> None:
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("epoch", sa.BigInteger(), server_default="1", nullable=False))
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=200), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        for statement in _NOTIFY:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS maild_outbox_requeued ON outbox")
        op.execute("DROP TRIGGER IF EXISTS maild_outbox_inserted ON outbox")
        op.execute("DROP FUNCTION IF EXISTS maild_outbox_notify()")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("claimed_by")
    with op.batch_alter_table("leases", schema=None) as batch_op:
        batch_op.drop_column("epoch")
