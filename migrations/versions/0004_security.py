"""security: hashed webhook secrets, encrypted-token columns, per-bot Telegram secrets, (bot, chat) unique,
retention indexes

Revision ID: 0004_security
Revises: 0001
Create Date: 2026-12-01 03:00:00

Existing clients without a webhook secret keep receiving deliveries (webhook_insecure = true) until the
operator gives them one: refusing them on upgrade would drop every customer message they get. `client list`
shows them. Tokens stored in plain text stay readable; `python -m app.cli secrets rotate` encrypts them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_security"
down_revision: str | None = "0005_bookings"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("clients", sa.Column("webhook_secret_hash", sa.String(length=80), nullable=True))
    op.add_column("clients", sa.Column("webhook_insecure", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.add_column("clients", sa.Column("telegram_bot_id", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE clients SET webhook_secret_hash = 'sha256:' || encode(sha256(convert_to(webhook_secret, 'UTF8')), 'hex') "
        "WHERE webhook_secret IS NOT NULL AND webhook_secret <> ''"
    )
    op.execute("UPDATE clients SET webhook_insecure = true WHERE webhook_secret_hash IS NULL")
    op.drop_column("clients", "webhook_secret")
    op.alter_column("clients", "chatflow_token", type_=sa.Text(), existing_type=sa.String(length=200))
    op.alter_column("clients", "telegram_bot_token", type_=sa.Text(), existing_type=sa.String(length=200))
    op.execute(
        "UPDATE clients SET telegram_bot_id = split_part(telegram_bot_token, ':', 1)::bigint "
        "WHERE telegram_bot_token ~ '^[0-9]{1,18}:'"
    )
    duplicates = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT string_agg(slug, ', ' ORDER BY slug) FROM clients WHERE telegram_chat_id IS NOT NULL "
                "GROUP BY COALESCE(telegram_bot_id, 0), telegram_chat_id HAVING count(*) > 1"
            )
        )
        .scalars()
        .all()
    )
    if duplicates:
        raise RuntimeError(
            "clients share a Telegram bot and chat, so managers' updates cannot be routed: "
            + "; ".join(duplicates)
            + ". Give each its own chat (client update --telegram-chat-id) and migrate again."
        )
    op.create_index(
        "uq_clients_telegram_bot_chat",
        "clients",
        [sa.text("COALESCE(telegram_bot_id, 0)"), "telegram_chat_id"],
        unique=True,
        postgresql_where=sa.text("telegram_chat_id IS NOT NULL"),
    )
    op.create_table(
        "telegram_bots",
        sa.Column("bot_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("webhook_secret_hash", sa.String(length=80), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("bot_id", name=op.f("pk_telegram_bots")),
    )
    # Retention's indexes, built without blocking the webhook's inserts on a large table.
    with op.get_context().autocommit_block():
        op.create_index("ix_messages_client_created", "messages", ["client_id", "created_at"], postgresql_concurrently=True)
        op.create_index(
            "ix_outbox_finished",
            "outbox",
            ["created_at"],
            postgresql_where=sa.text("status IN ('sent', 'failed', 'cancelled')"),
            postgresql_concurrently=True,
        )
        op.create_index("ix_telegram_updates_received_at", "telegram_updates", ["received_at"], postgresql_concurrently=True)


def downgrade() -> None:
    op.drop_index("ix_telegram_updates_received_at", table_name="telegram_updates")
    op.drop_index("ix_outbox_finished", table_name="outbox")
    op.drop_index("ix_messages_client_created", table_name="messages")
    op.drop_table("telegram_bots")
    op.drop_index("uq_clients_telegram_bot_chat", table_name="clients")
    # The webhook secrets themselves are gone (only digests were kept): clients need new ones after a downgrade.
    op.add_column("clients", sa.Column("webhook_secret", sa.String(length=200), nullable=True))
    op.alter_column("clients", "telegram_bot_token", type_=sa.String(length=200), existing_type=sa.Text())
    op.alter_column("clients", "chatflow_token", type_=sa.String(length=200), existing_type=sa.Text())
    op.drop_column("clients", "telegram_bot_id")
    op.drop_column("clients", "webhook_insecure")
    op.drop_column("clients", "webhook_secret_hash")
