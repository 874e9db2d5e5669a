"""Rate limits and budgets, counted in Redis so every process shares them: per customer phone (messages a
minute, turns an hour, escalations a day) and per client (language-model calls and seconds of audio
transcribed a day). A limit never loses a message: the turn that goes over it is stored and only its expensive
steps are skipped; the customer is told at most once an hour (or once a day, for a daily limit) and the operator
once a day per limit and client.

Without Redis the limits are not enforced (logged): a missing cache must not silence the bot.
"""

import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
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


_TOLD_SECONDS = 3600  # a customer hears about a limit at most once an hour, however short its window
_ALERTED_SECONDS = 86400  # the operator, once a day per limit and client


def _key(kind: str, limit: Limit, who: str, seconds: int) -> str:
    return f"limit:{kind}:{limit}:{who}:{int(time.time()) // seconds}"


def _who(limit: Limit, scope: Scope) -> str:
    return f"{scope.client_id}:{scope.phone}" if limit in _PER_PHONE else str(scope.client_id)


def take(limit: Limit, scope: Scope, amount: int = 1) -> bool:
    """Count `amount` against the limit's current window; False when that goes over it (the operator is then
    alerted, once a day per limit and client). True when there is no limit or Redis cannot count."""
    return not exceeded([(limit, amount)], scope)


def exceeded(amounts: Sequence[tuple[Limit, int]], scope: Scope) -> list[Limit]:
    """take() for several limits at once, in one Redis round trip: the limits this goes over."""
    counted = [(limit, amount, most) for limit, amount in amounts if (most := maximum(limit, scope)) > 0 and amount > 0]
    if not counted:
        return []
    try:
        pipe = redis_client.pipeline(transaction=False)
        for limit, amount, _ in counted:
            key = _key("count", limit, _who(limit, scope), _WINDOW_SECONDS[limit])
            pipe.incrby(key, amount)
            pipe.expire(key, _WINDOW_SECONDS[limit] + 60)
        used = [int(value) for value in pipe.execute()[::2]]
    except redis.RedisError as exc:
        logger.warning("limits.unavailable", extra={"limits": [limit for limit, _, _ in counted], "error_type": type(exc).__name__})
        return []
    over = []
    for (limit, _, most), count in zip(counted, used, strict=True):
        if count <= most:
            continue
        over.append(limit)
        logger.warning(
            "limits.exceeded", extra={"limit": limit, "client": scope.client_slug, "phone": scope.phone, "used": count, "max": most}
        )
        if _first(_key("alerted", limit, str(scope.client_id), _ALERTED_SECONDS), _ALERTED_SECONDS):
            alerts.fire(f"limit:{limit}:{scope.client_slug}", f"Client '{scope.client_slug}': {_ALERTS[limit].format(max=most)}")
    return over


def give_back(limit: Limit, scope: Scope, amount: int) -> None:
    """Uncount what a turn counted but did not use (it was superseded: a later turn counts its messages again)."""
    if maximum(limit, scope) <= 0 or amount <= 0:
        return
    with contextlib.suppress(redis.RedisError):
        redis_client.decrby(_key("count", limit, _who(limit, scope), _WINDOW_SECONDS[limit]), amount)


def first_notice(limit: Limit, scope: Scope) -> bool:
    """Whether the customer is yet to be told about this limit this hour (and now counts as told)."""
    seconds = max(_TOLD_SECONDS, _WINDOW_SECONDS[limit])
    return _first(_key("told", limit, _who(limit, scope), seconds), seconds)


def _first(key: str, seconds: int) -> bool:
    try:
        return bool(redis_client.set(key, 1, nx=True, ex=seconds + 60))
    except redis.RedisError:
        return True
