"""automatic-mail counts per address; steward mail held for confirmation

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import maild.store.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "automatic_sends",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("at", maild.store.models.UTCDateTime(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("template", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name=op.f("fk_automatic_sends_ticket_id_tickets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_automatic_sends")),
    )
    with op.batch_alter_table("automatic_sends", schema=None) as batch_op:
        batch_op.create_index("ix_automatic_sends_address_at", ["address", "at"], unique=False)
        batch_op.create_index("ix_automatic_sends_at", ["at"], unique=False)

    op.create_table(
        "held_commands",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("steward", sa.String(length=200), nullable=False),
        sa.Column("message_pk", sa.Integer(), nullable=False),
        sa.Column("created_at", maild.store.models.UTCDateTime(), nullable=False),
        sa.Column("expires_at", maild.store.models.UTCDateTime(), nullable=False),
        sa.Column("confirmed_at", maild.store.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_pk"], ["messages.id"], name=op.f("fk_held_commands_message_pk_messages")
        ),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["tickets.id"], name=op.f("fk_held_commands_ticket_id_tickets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_held_commands")),
        sa.UniqueConstraint("token", name=op.f("uq_held_commands_token")),
    )
    with op.batch_alter_table("held_commands", schema=None) as batch_op:
        batch_op.create_index("ix_held_commands_message_pk", ["message_pk"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("held_commands", schema=None) as batch_op:
        batch_op.drop_index("ix_held_commands_message_pk")
    op.drop_table("held_commands")
    with op.batch_alter_table("automatic_sends", schema=None) as batch_op:
        batch_op.drop_index("ix_automatic_sends_at")
        batch_op.drop_index("ix_automatic_sends_address_at")
    op.drop_table("automatic_sends")
