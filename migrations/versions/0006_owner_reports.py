"""owner reports: questions the bot could not answer, managers' answers suggested as knowledge, daily digests sent

Revision ID: 0006_owner_reports
Revises: 0004_security
Create Date: 2026-12-01 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_owner_reports"
down_revision: str | None = "0004_security"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "knowledge_gaps",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("client_id", sa.UUID(), nullable=False),
        sa.Column("conversation_id", sa.UUID(), nullable=False),
        sa.Column("handover_id", sa.UUID(), nullable=True),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("vector", postgresql.ARRAY(sa.REAL()), nullable=True),
        sa.Column("embedder", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"], name="fk_knowledge_gaps_client_id_clients", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversations.id"], name="fk_knowledge_gaps_conversation_id_conversations", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["handover_id"], ["handovers.id"], name="fk_knowledge_gaps_handover_id_handovers", ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_knowledge_gaps"),
    )
    op.create_index("ix_knowledge_gaps_client_created", "knowledge_gaps", ["client_id", "created_at"])
    op.create_index("ix_knowledge_gaps_handover", "knowledge_gaps", ["handover_id"])
    op.create_table(
        "kb_suggestions",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("client_id", sa.UUID(), nullable=False),
        sa.Column("handover_id", sa.UUID(), nullable=True),
        sa.Column("question", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("manager", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'accepted', 'rejected')", name="ck_kb_suggestions_status"),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"], name="fk_kb_suggestions_client_id_clients", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["handover_id"], ["handovers.id"], name="fk_kb_suggestions_handover_id_handovers", ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name="pk_kb_suggestions"),
        sa.UniqueConstraint("handover_id", name="uq_kb_suggestions_handover_id"),
    )
    op.create_index("ix_kb_suggestions_client_created", "kb_suggestions", ["client_id", "created_at"])
    op.create_table(
        "daily_digests",
        sa.Column("client_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("outbox_id", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"], name="fk_daily_digests_client_id_clients", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("client_id", "day", name="pk_daily_digests"),
    )


def downgrade() -> None:
    op.drop_table("daily_digests")
    op.drop_index("ix_kb_suggestions_client_created", table_name="kb_suggestions")
    op.drop_table("kb_suggestions")
    op.drop_index("ix_knowledge_gaps_handover", table_name="knowledge_gaps")
    op.drop_index("ix_knowledge_gaps_client_created", table_name="knowledge_gaps")
    op.drop_table("knowledge_gaps")
