"""The turn's debounce state in Redis: promises the webhook relies on when it moves a turn before storing."""

import time
import uuid

from app.redis_client import redis_client
from app.services.conversation import scheduling


def _move(client_id: uuid.UUID, *, wait_seconds: float, max_wait_seconds: float, shortest_wait_seconds: float = 0.0) -> scheduling.TurnMove:
    return scheduling.TurnMove(
        client_id=client_id,
        wait_seconds=wait_seconds,
        max_wait_seconds=max_wait_seconds,
        lag_seconds=0.0,
        shortest_wait_seconds=shortest_wait_seconds,
    )


def _first_delivery(client_id: uuid.UUID, conversation_id: uuid.UUID, name: str, **timing: float) -> int | None:
    return _move(client_id, **timing).first_delivery(conversation_id, dedup_key=f"dedup:{client_id}:{name}", dedup_ttl_seconds=60)


def _due(conversation_id: uuid.UUID) -> int:
    due = redis_client.hget(f"turn:{conversation_id}", "due")
    assert due is not None
    return int(due)


def test_soonest_due_time_allows_for_a_later_message_with_a_shorter_wait():
    # A returning customer's message moves the turn before it is stored, and the webhook moves it again
    # only if the turn may fall due before the store is done. A later message with a short wait ("?")
    # makes the turn due sooner than this one's own wait: the soonest time given must allow for that.
    client_id, conversation_id = uuid.uuid4(), uuid.uuid4()
    soonest = _first_delivery(client_id, conversation_id, "A", wait_seconds=1.8, max_wait_seconds=10, shortest_wait_seconds=0.4)
    _move(client_id, wait_seconds=0.4, max_wait_seconds=10).apply(conversation_id)
    assert soonest is not None and soonest <= _due(conversation_id)


def test_soonest_due_time_allows_for_the_turns_cap():
    # The turn started 0.8 s ago and may wait 1 s in all: a later short message makes it due at the cap,
    # sooner than this message's wait and sooner than the shortest wait from now.
    client_id, conversation_id = uuid.uuid4(), uuid.uuid4()
    _move(client_id, wait_seconds=1.0, max_wait_seconds=1.0).apply(conversation_id)
    time.sleep(0.8)
    soonest = _first_delivery(client_id, conversation_id, "B", wait_seconds=1.8, max_wait_seconds=1.0, shortest_wait_seconds=0.4)
    _move(client_id, wait_seconds=0.4, max_wait_seconds=1.0).apply(conversation_id)
    assert soonest is not None and soonest <= _due(conversation_id)


def test_a_delivery_seen_before_moves_nothing():
    client_id, conversation_id = uuid.uuid4(), uuid.uuid4()
    assert _first_delivery(client_id, conversation_id, "C", wait_seconds=1.0, max_wait_seconds=10) is not None
    due = _due(conversation_id)
    assert _first_delivery(client_id, conversation_id, "C", wait_seconds=5.0, max_wait_seconds=10) is None
    assert _due(conversation_id) == due
