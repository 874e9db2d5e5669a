"""All models, imported here so Alembic and the app see one complete metadata."""

from app.models.base import Base
from app.models.branch import Branch
from app.models.client import Client
from app.models.company import Company
from app.models.conversation import Conversation
from app.models.handover import Handover, HandoverEvent
from app.models.message import Message
from app.models.outbox import OutboxItem
from app.models.telegram_update import TelegramUpdate
from app.models.user import User

__all__ = [
    "Base",
    "Branch",
    "Client",
    "Company",
    "Conversation",
    "Handover",
    "HandoverEvent",
    "Message",
    "OutboxItem",
    "TelegramUpdate",
    "User",
]
