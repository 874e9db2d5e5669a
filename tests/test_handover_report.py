"""`python -m app.cli report handovers`: outcomes, time to take, takes and skips per manager, auto-closes."""

import json
from datetime import timedelta

from sqlalchemy import func, select

from app import cli
from app.db import session_scope
from app.models import Conversation, Handover, HandoverAction, HandoverEvent, HandoverOutcome, HandoverStatus, User


def _handover(session, client, phone, *, outcome, taken_after=None, opened_days_ago=1, events=()):
    user = User(client_id=client.id, phone=phone, remote_jid=f"{phone}@s.whatsapp.net")
    session.add(user)
    session.flush()
    conversation = Conversation(client_id=client.id, user_id=user.id)
    session.add(conversation)
    session.flush()
    opened = session.scalar(select(func.now())) - timedelta(days=opened_days_ago)
    status = {
        None: HandoverStatus.PENDING,
        HandoverOutcome.RESOLVED: HandoverStatus.RESOLVED,
        HandoverOutcome.CANCELLED: HandoverStatus.RESOLVED,
        HandoverOutcome.RETURNED: HandoverStatus.BOT_HANDLING,
        HandoverOutcome.UNTAKEN: HandoverStatus.TIMEOUT,
        HandoverOutcome.SILENT: HandoverStatus.TIMEOUT,
    }[outcome]
    handover = Handover(
        client_id=client.id,
        conversation_id=conversation.id,
        status=status,
        outcome=outcome,
        reason="human_request",
        created_at=opened,
        taken_at=opened + timedelta(minutes=taken_after) if taken_after is not None else None,
    )
    session.add(handover)
    session.flush()
    for action, name in events:
        session.add(HandoverEvent(handover_id=handover.id, action=action, actor_name=name))


def test_the_report_counts_outcomes_time_to_take_takes_skips_and_auto_closes(make_client, capsys):
    salon = make_client("salon")
    other = make_client("other")
    take, skip = HandoverAction.TAKE, HandoverAction.SKIP
    with session_scope() as session:
        _handover(session, salon, "77010000001", outcome=HandoverOutcome.RESOLVED, taken_after=2, events=[(skip, "Болат"), (take, "Анна")])
        _handover(session, salon, "77010000002", outcome=HandoverOutcome.RESOLVED, taken_after=4, events=[(take, "Анна")])
        _handover(session, salon, "77010000003", outcome=HandoverOutcome.SILENT, taken_after=30, events=[(take, "Болат")])
        _handover(session, salon, "77010000004", outcome=HandoverOutcome.UNTAKEN, events=[(skip, "Болат"), (skip, "Анна")])
        _handover(session, salon, "77010000005", outcome=HandoverOutcome.CANCELLED)
        _handover(session, salon, "77010000006", outcome=None)
        _handover(session, salon, "77010000007", outcome=HandoverOutcome.RESOLVED, taken_after=1, opened_days_ago=9)  # too old
        _handover(session, other, "77010000008", outcome=HandoverOutcome.UNTAKEN)  # another client's

    assert cli.main(["report", "handovers", "--client", "salon", "--days", "7", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"] == 6
    assert data["by_outcome"] == {"resolved": 2, "silent": 1, "untaken": 1, "cancelled": 1, "open": 1}
    assert data["auto_closed"] == 2 and data["taken"] == 3
    assert (data["take_median_minutes"], data["take_p90_minutes"]) == (4.0, 30.0)
    managers = {row["name"]: (row["takes"], row["skips"]) for row in data["managers"]}
    assert managers == {"Анна": (2, 1), "Болат": (1, 2)}

    assert cli.main(["report", "handovers", "--client", "salon", "--days", "7"]) == 0
    text = capsys.readouterr().out
    assert "auto-closed: 2" in text and "median 4 min, p90 30 min" in text
    assert "auto-closed: nobody took it" in text and "Болат" in text
