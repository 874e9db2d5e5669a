"""handover outcomes: how each handover ended, the clocks' timestamps, the client's policy, served media files

Revision ID: 0003_handover_outcomes
Revises: 0001
Create Date: 2026-12-01 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_handover_outcomes"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TIMESTAMPS = (
    "last_customer_message_at",
    "last_manager_reply_at",
    "active_reminder_sent_at",
    "active_urgent_sent_at",
    "customer_notified_at",
)


def upgrade() -> None:
    op.add_column("handovers", sa.Column("reason_detail", sa.String(length=200), nullable=True))
    op.add_column("handovers", sa.Column("outcome", sa.String(length=16), nullable=True))
    for name in _TIMESTAMPS:
        op.add_column("handovers", sa.Column(name, sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(
        op.f("ck_handovers_outcome"), "handovers", "outcome IN ('resolved', 'returned', 'cancelled', 'untaken', 'silent')"
    )
    # Handovers closed before this revision: their outcome from their status (and the customer's cancel event).
    op.execute(
        """
        UPDATE handovers h SET outcome = CASE
            WHEN h.status = 'resolved' AND EXISTS (
                SELECT 1 FROM handover_events e WHERE e.handover_id = h.id AND e.action = 'cancelled_by_customer'
            ) THEN 'cancelled'
            WHEN h.status = 'resolved' THEN 'resolved'
            WHEN h.status = 'bot_handling' THEN 'returned'
            ELSE 'untaken' END
        WHERE h.status IN ('resolved', 'bot_handling', 'timeout')
        """
    )
    # Open ones: the customer was told when the handover opened; a pending one counts from then.
    op.execute("UPDATE handovers SET customer_notified_at = created_at WHERE status IN ('pending', 'active')")
    op.add_column("clients", sa.Column("policy", sa.Text(), server_default="", nullable=False))
    # escalate_on_no_knowledge became no_knowledge_policy: "false" never called a manager unasked, the
    # closest is to offer one; an explicit "true" keeps escalating at once.
    op.execute(
        """
        UPDATE clients SET settings = (settings - 'escalate_on_no_knowledge') || jsonb_build_object(
            'no_knowledge_policy',
            CASE WHEN settings->>'escalate_on_no_knowledge' = 'true' THEN 'escalate' ELSE 'clarify_then_offer' END)
        WHERE settings ? 'escalate_on_no_knowledge'
        """
    )
    op.create_table(
        "media_files",
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.UUID(), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"], name=op.f("fk_media_files_client_id_clients"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_media_files")),
    )
    op.create_index("ix_media_files_expires_at", "media_files", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_media_files_expires_at", table_name="media_files")
    op.drop_table("media_files")
    op.drop_column("clients", "policy")
    op.drop_constraint(op.f("ck_handovers_outcome"), "handovers", type_="check")
    for name in reversed(_TIMESTAMPS):
        op.drop_column("handovers", name)
    op.drop_column("handovers", "outcome")
    op.drop_column("handovers", "reason_detail")
