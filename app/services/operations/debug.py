"""What the operator sees for one customer: conversation state, bot status, open handover, recent messages."""

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Client, Conversation, Message, User
from app.services.handover import lifecycle
from app.utils.errors import BadRequest, NotFound

RECENT_MESSAGES = 20


def describe(session: Session, *, phone: str, client_slug: str | None) -> dict[str, Any]:
    digits = "".join(ch for ch in phone if ch.isdigit())
    query = select(User, Client).join(Client, Client.id == User.client_id).where(User.phone == digits)
    if client_slug:
        query = query.where(Client.slug == client_slug)
    rows = session.execute(query).all()
    if not rows:
        raise NotFound("no customer with this phone" + (f" for client '{client_slug}'" if client_slug else ""))
    if len(rows) > 1:
        slugs = ", ".join(sorted(client.slug for _, client in rows))
        raise BadRequest(f"this phone writes to several clients ({slugs}): add ?client=SLUG")
    user, client = rows[0]
    conversation = session.scalar(select(Conversation).where(Conversation.user_id == user.id))
    result: dict[str, Any] = {"phone": user.phone, "client": client.slug, "name": user.name, "conversation": None, "active_handover": None}
    if conversation is None:
        result["recent_messages"] = []
        return result
    result["conversation"] = {
        "id": str(conversation.id),
        "state": conversation.state,
        "bot_status": conversation.bot_status,
        "bot_muted_until": conversation.bot_muted_until.isoformat() if conversation.bot_muted_until else None,
        "telegram_topic_id": conversation.telegram_topic_id,
        "last_message_at": conversation.last_message_at.isoformat() if conversation.last_message_at else None,
    }
    handover = lifecycle.open_handover(session, conversation.id)
    if handover is not None:
        result["active_handover"] = {
            "id": str(handover.id),
            "status": handover.status,
            "reason": handover.reason,
            "reason_detail": handover.reason_detail,
            "assigned_to": handover.assigned_to,
            "created_at": handover.created_at.isoformat(),
            "last_customer_message_at": handover.last_customer_message_at.isoformat() if handover.last_customer_message_at else None,
            "last_manager_reply_at": handover.last_manager_reply_at.isoformat() if handover.last_manager_reply_at else None,
        }
    messages = session.scalars(
        select(Message).where(Message.conversation_id == conversation.id).order_by(Message.created_at.desc()).limit(RECENT_MESSAGES)
    ).all()
    result["recent_messages"] = [
        {
            "role": m.role,
            "type": m.type,
            "content": m.content,
            "status": m.status,
            "intent": m.intent,
            "created_at": m.created_at.isoformat(),
        }
        for m in reversed(messages)
    ]
    return result
