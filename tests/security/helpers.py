"""Shared by the security tests: a client with a Telegram group, and what a manager sees there."""

import html
import re

from sqlalchemy import func, select

from app.db import session_scope
from app.models import Message
from tests.helpers import chatflow_payload

CHAT = -1009876543210
PHONE = "77015550303"


def say(api, text, *, phone=PHONE, slug="salon", **overrides):
    response = api.post(f"/webhook/{slug}", json=chatflow_payload(text, phone=phone, **overrides))
    assert response.status_code == 200, response.text
    return response


def visible(text: str | None) -> str:
    """What a manager sees of an HTML message: tags applied, entities decoded as the Bot API does."""
    return html.unescape(re.sub(r"<[^>]+>", "", text or ""))


def stored_messages() -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(Message)) or 0)
