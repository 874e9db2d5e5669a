"""All models, imported here so Alembic and the app see one complete metadata."""

from app.models.base import Base
from app.models.booking import BookingField, BookingRequest, BookingStatus, Service
from app.models.branch import Branch
from app.models.client import Client
from app.models.company import Company
from app.models.conversation import BotStatus, Conversation, ConversationState
from app.models.handover import (
    OPEN_HANDOVER_STATUSES,
    Handover,
    HandoverAction,
    HandoverEvent,
    HandoverOutcome,
    HandoverReason,
    HandoverStatus,
)
from app.models.insight import DailyDigest, KnowledgeGap, Suggestion, SuggestionStatus
from app.models.intent import Intent, IntentExample
from app.models.media_file import MediaFile
from app.models.message import Message, MessageRole, MessageStatus, MessageType
from app.models.outbox import OutboxChannel, OutboxItem, OutboxKind, OutboxStatus
from app.models.telegram_update import TelegramBot, TelegramUpdate
from app.models.turn_lease import TurnLease
from app.models.user import User

__all__ = [
    "OPEN_HANDOVER_STATUSES",
    "Base",
    "BookingField",
    "BookingRequest",
    "BookingStatus",
    "BotStatus",
    "Branch",
    "Client",
    "Company",
    "Conversation",
    "ConversationState",
    "DailyDigest",
    "Handover",
    "HandoverAction",
    "HandoverEvent",
    "HandoverOutcome",
    "HandoverReason",
    "HandoverStatus",
    "Intent",
    "IntentExample",
    "KnowledgeGap",
    "MediaFile",
    "Message",
    "MessageRole",
    "MessageStatus",
    "MessageType",
    "OutboxChannel",
    "OutboxItem",
    "OutboxKind",
    "OutboxStatus",
    "Service",
    "Suggestion",
    "SuggestionStatus",
    "TelegramBot",
    "TelegramUpdate",
    "TurnLease",
    "User",
]
