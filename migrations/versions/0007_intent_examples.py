"""intent examples: a client's own labelled messages for the intent classifier, with their e5 vectors

Revision ID: 0007_intent_examples
Revises: 0006_owner_reports
Create Date: 2026-12-01 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_intent_examples"
down_revision: str | None = "0006_owner_reports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LABELS = ("human_request", "frustration", "opt_out", "booking", "question", "greeting", "thanks", "other")


def upgrade() -> None:
    op.create_table(
        "intent_examples",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("client_id", sa.UUID(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("label", sa.String(length=32), nullable=False),
        sa.Column("embedder", sa.String(length=64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("label IN (" + ", ".join(f"'{label}'" for label in LABELS) + ")", name=op.f("ck_intent_examples_label")),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"], name=op.f("fk_intent_examples_client_id_clients"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intent_examples")),
        sa.UniqueConstraint("client_id", "text", name=op.f("uq_intent_examples_client_id")),
    )
    op.create_index(op.f("ix_intent_examples_client_id"), "intent_examples", ["client_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_intent_examples_client_id"), table_name="intent_examples")
    op.drop_table("intent_examples")
