"""The allowed handover transitions and what each handover status means for the conversation, in one place."""

from app.models import BotStatus, ConversationState, HandoverStatus
from app.utils.errors import TrufflesError

_CLOSED = (HandoverStatus.RESOLVED, HandoverStatus.BOT_HANDLING, HandoverStatus.TIMEOUT)
HANDOVER_TRANSITIONS: dict[HandoverStatus, frozenset[HandoverStatus]] = {
    HandoverStatus.PENDING: frozenset({HandoverStatus.ACTIVE, *_CLOSED}),
    HandoverStatus.ACTIVE: frozenset(_CLOSED),
    HandoverStatus.RESOLVED: frozenset(),
    HandoverStatus.BOT_HANDLING: frozenset(),
    HandoverStatus.TIMEOUT: frozenset(),
}

# conversation.state and bot_status that follow from a handover entering each status.
CONVERSATION_FOR_HANDOVER: dict[HandoverStatus, tuple[ConversationState, BotStatus]] = {
    HandoverStatus.PENDING: (ConversationState.PENDING, BotStatus.MUTED),
    HandoverStatus.ACTIVE: (ConversationState.MANAGER, BotStatus.MUTED),
    HandoverStatus.RESOLVED: (ConversationState.BOT, BotStatus.ACTIVE),
    HandoverStatus.BOT_HANDLING: (ConversationState.BOT, BotStatus.ACTIVE),
    HandoverStatus.TIMEOUT: (ConversationState.BOT, BotStatus.ACTIVE),
}


class InvalidTransition(TrufflesError):
    status_code = 409
    code = "invalid_transition"


def is_closed(status: HandoverStatus) -> bool:
    """A handover in this status is over: it can move no further."""
    return not HANDOVER_TRANSITIONS[status]


def can_transition(current: HandoverStatus, target: HandoverStatus) -> bool:
    return target in HANDOVER_TRANSITIONS.get(current, frozenset())


def check_transition(current: HandoverStatus, target: HandoverStatus) -> None:
    """Raise InvalidTransition unless a handover may move from `current` to `target`."""
    if not can_transition(current, target):
        raise InvalidTransition(f"handover cannot go from {current} to {target}")
