"""bookings: each client's services list (names, prices, durations) and the customers' booking requests

Revision ID: 0005_bookings
Revises: 0003_handover_outcomes
Create Date: 2026-12-01 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005_bookings"
down_revision: str | None = "0003_handover_outcomes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("client_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("aliases", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=True),
        sa.Column("price", sa.Integer(), nullable=True),
        sa.Column("price_max", sa.Integer(), nullable=True),
        sa.Column("currency", sa.String(length=8), server_default="тг", nullable=False),
        sa.Column("position", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"], name=op.f("fk_services_client_id_clients"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_services")),
        sa.UniqueConstraint("client_id", "name", name=op.f("uq_services_client_id")),
    )
    op.create_table(
        "booking_requests",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("client_id", sa.UUID(), nullable=False),
        sa.Column("conversation_id", sa.UUID(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("service_id", sa.UUID(), nullable=True),
        sa.Column("service_name", sa.String(length=200), nullable=True),
        sa.Column("requested_day", sa.Date(), nullable=True),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("customer_name", sa.String(length=200), nullable=True),
        sa.Column("asking", sa.String(length=16), nullable=True),
        sa.Column("proposal_from_id", sa.BigInteger(), nullable=True),
        sa.Column("proposal_from", sa.String(length=200), nullable=True),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_by_id", sa.BigInteger(), nullable=True),
        sa.Column("telegram_message_id", sa.BigInteger(), nullable=True),
        sa.Column("extra", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('collecting', 'requested', 'confirmed', 'declined', 'cancelled')", name=op.f("ck_booking_requests_status")
        ),
        sa.CheckConstraint("asking IN ('service', 'time', 'name')", name=op.f("ck_booking_requests_asking")),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"], name=op.f("fk_booking_requests_client_id_clients"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["conversation_id"], ["conversations.id"], name=op.f("fk_booking_requests_conversation_id_conversations"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["service_id"], ["services.id"], name=op.f("fk_booking_requests_service_id_services"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_booking_requests")),
    )
    op.create_index(
        "uq_booking_requests_collecting",
        "booking_requests",
        ["conversation_id"],
        unique=True,
        postgresql_where=sa.text("status = 'collecting'"),
    )
    op.create_index("ix_booking_requests_client_status", "booking_requests", ["client_id", "status", "requested_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_booking_requests_client_status", table_name="booking_requests")
    op.drop_index("uq_booking_requests_collecting", table_name="booking_requests")
    op.drop_table("booking_requests")
    op.drop_table("services")
