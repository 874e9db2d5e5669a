"""The allowed handover transitions and what each handover status means for the conversation, in one place."""

from app.utils.errors import TrufflesError

HANDOVER_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"active", "resolved", "bot_handling", "timeout"}),
    "active": frozenset({"resolved", "bot_handling", "timeout"}),
    "resolved": frozenset(),
    "bot_handling": frozenset(),
    "timeout": frozenset(),
}

# conversation.state and bot_status that follow from a handover entering each status.
CONVERSATION_FOR_HANDOVER: dict[str, tuple[str, str]] = {
    "pending": ("pending", "muted"),
    "active": ("manager", "muted"),
    "resolved": ("bot", "active"),
    "bot_handling": ("bot", "active"),
    "timeout": ("bot", "active"),
}


class InvalidTransition(TrufflesError):
    status_code = 409
    code = "invalid_transition"


def can_transition(current: str, target: str) -> bool:
    return target in HANDOVER_TRANSITIONS.get(current, frozenset())


def check_transition(current: str, target: str) -> None:
    """Raise InvalidTransition unless a handover may move from `current` to `target`."""
    if not can_transition(current, target):
        raise InvalidTransition(f"handover cannot go from {current} to {target}")
