"""turn leases: a conversation's turn claimed with an owner, a version and a lease renewed by a heartbeat;
outbox claims versioned likewise, and sends whose outcome is unknown recorded as 'uncertain'

Revision ID: 0008_turn_leases
Revises: 0007_intent_examples
Create Date: 2026-12-01 04:40:00

Turns in flight during the upgrade (messages 'processing' with no lease row) are re-driven by the first
re-drive tick of the new version: a message being processed without a live lease is taken over.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008_turn_leases"
down_revision: str | None = "0007_intent_examples"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATUSES = "status IN ('pending', 'sending', 'sent', 'failed', 'cancelled')"
_NEW_STATUSES = "status IN ('pending', 'sending', 'sent', 'uncertain', 'failed', 'cancelled')"


def upgrade() -> None:
    op.create_table(
        "turn_leases",
        sa.Column("conversation_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("owner", sa.String(length=120), nullable=False),
        sa.Column("turn_id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversations.id"], name=op.f("fk_turn_leases_conversation_id_conversations"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("conversation_id", name=op.f("pk_turn_leases")),
    )
    op.add_column("outbox", sa.Column("lease_owner", sa.String(length=120), nullable=True))
    op.add_column("outbox", sa.Column("lease_version", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.drop_constraint(op.f("ck_outbox_status"), "outbox", type_="check")
    op.create_check_constraint(op.f("ck_outbox_status"), "outbox", _NEW_STATUSES)
    op.drop_index("ix_outbox_finished", table_name="outbox")
    op.create_index(
        "ix_outbox_finished", "outbox", ["created_at"], postgresql_where=sa.text("status IN ('sent', 'failed', 'cancelled', 'uncertain')")
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_finished", table_name="outbox")
    op.create_index("ix_outbox_finished", "outbox", ["created_at"], postgresql_where=sa.text("status IN ('sent', 'failed', 'cancelled')"))
    op.execute("UPDATE outbox SET status = 'failed' WHERE status = 'uncertain'")
    op.drop_constraint(op.f("ck_outbox_status"), "outbox", type_="check")
    op.create_check_constraint(op.f("ck_outbox_status"), "outbox", _OLD_STATUSES)
    op.drop_column("outbox", "lease_version")
    op.drop_column("outbox", "lease_owner")
    op.drop_table("turn_leases")
