"""Rate limits and budgets, counted in Redis so every process shares them: per customer phone (messages a
minute, turns an hour, escalations a day) and per client (language-model calls and seconds of audio
transcribed a day). A limit never loses a message: the turn that goes over it is stored and only its expensive
steps are skipped; the customer is told once per window and the operator once a day per limit and client.

Without Redis the limits are not enforced (logged): a missing cache must not silence the bot.
"""

import logging
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum

import redis

from app.config import settings
from app.redis_client import redis_client
from app.schemas.client import ClientSettings
from app.services.operations import alerts

logger = logging.getLogger(__name__)


class Limit(StrEnum):
    MESSAGES = "messages"  # a phone's messages per minute
    TURNS = "turns"  # a phone's turns per hour
    ESCALATIONS = "escalations"  # a phone's new handovers per day
    MODEL_CALLS = "model_calls"  # a client's turns that consult the language model, per day
    TRANSCRIPTION = "transcription_seconds"  # a client's seconds of voice notes transcribed, per day


_WINDOW_SECONDS = {
    Limit.MESSAGES: 60,
    Limit.TURNS: 3600,
    Limit.ESCALATIONS: 86400,
    Limit.MODEL_CALLS: 86400,
    Limit.TRANSCRIPTION: 86400,
}
_PER_PHONE = frozenset({Limit.MESSAGES, Limit.TURNS, Limit.ESCALATIONS})
_ALERTS = {
    Limit.MESSAGES: "a customer sends more than {max} messages a minute",
    Limit.TURNS: "a customer's turns exceed {max} an hour",
    Limit.ESCALATIONS: "a customer asked for a manager more than {max} times today",
    Limit.MODEL_CALLS: "the daily budget of {max} language-model turns is spent: the bot answers without the model",
    Limit.TRANSCRIPTION: "the daily budget of {max} seconds of voice transcription is spent",
}


@dataclass(frozen=True)
class Scope:
    """Whose counters: the client, and the customer's phone for the per-phone limits."""

    client_id: uuid.UUID
    client_slug: str
    phone: str
    client_settings: ClientSettings


def maximum(limit: Limit, scope: Scope) -> int:
    """The limit's maximum for this client (0: none)."""
    own = scope.client_settings
    if limit == Limit.MODEL_CALLS and own.limit_model_calls_per_day is not None:
        return own.limit_model_calls_per_day
    if limit == Limit.TRANSCRIPTION and own.limit_transcription_seconds_per_day is not None:
        return own.limit_transcription_seconds_per_day
    return {
        Limit.MESSAGES: settings.limit_messages_per_minute,
        Limit.TURNS: settings.limit_turns_per_hour,
        Limit.ESCALATIONS: settings.limit_escalations_per_day,
        Limit.MODEL_CALLS: settings.limit_model_calls_per_day,
        Limit.TRANSCRIPTION: settings.limit_transcription_seconds_per_day,
    }[limit]


def _key(kind: str, limit: Limit, scope: Scope) -> str:
    window = int(time.time()) // _WINDOW_SECONDS[limit]
    who = f"{scope.client_id}:{scope.phone}" if limit in _PER_PHONE else str(scope.client_id)
    return f"limit:{kind}:{limit}:{who}:{window}"


def take(limit: Limit, scope: Scope, amount: int = 1) -> bool:
    """Count `amount` against the limit's current window; False when that goes over it (the operator is then
    alerted, once a day per limit and client). True when there is no limit or Redis cannot count."""
    most = maximum(limit, scope)
    if most <= 0 or amount <= 0:
        return True
    key = _key("count", limit, scope)
    try:
        pipe = redis_client.pipeline(transaction=False)
        pipe.incrby(key, amount)
        pipe.expire(key, _WINDOW_SECONDS[limit] + 60)
        used = int(pipe.execute()[0])
    except redis.RedisError as exc:
        logger.warning("limits.unavailable", extra={"limit": limit, "error_type": type(exc).__name__})
        return True
    if used <= most:
        return True
    logger.warning("limits.exceeded", extra={"limit": limit, "client": scope.client_slug, "phone": scope.phone, "used": used, "max": most})
    if _first("alerted", limit, scope, per_client=True):
        alerts.fire(f"limit:{limit}:{scope.client_slug}", f"Client '{scope.client_slug}': {_ALERTS[limit].format(max=most)}")
    return False


def first_notice(limit: Limit, scope: Scope) -> bool:
    """Whether the customer is yet to be told about this limit in its current window (and now counts as told)."""
    return _first("told", limit, scope, per_client=False)


def _first(kind: str, limit: Limit, scope: Scope, *, per_client: bool) -> bool:
    key = _key(kind, limit, scope)
    if per_client:
        key = f"limit:{kind}:{limit}:{scope.client_id}:{int(time.time()) // 86400}"
    try:
        return bool(redis_client.set(key, 1, nx=True, ex=_WINDOW_SECONDS[limit] + 60))
    except redis.RedisError:
        return True
