"""The owner's view: `report --client S --since D` and the same figures as a daily digest in the General topic of
the client's Telegram group, at the client's local time, once per day whatever the processes and restarts."""

import itertools
import json
import os
import subprocess
import sys
import threading
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from app import cli
from app.db import session_scope
from app.models import Conversation, DailyDigest, Handover
from app.services import replies
from app.services.knowledge import kb
from app.services.operations import digest
from fakes.telegram import make_message_update, make_user
from tests.conftest import TELEGRAM_SECRET
from tests.helpers import chatflow_payload, wait_until

CHAT = -1001234500027
ALMATY = ZoneInfo("Asia/Almaty")
KB = "# Режим работы\nСалон работает ежедневно с 10:00 до 21:00, без выходных.\n"
ROOT = Path(__file__).resolve().parent.parent
_updates = itertools.count(9000)


@pytest.fixture
def salon(make_client, chatflow, telegram):
    client = make_client(
        "salon", telegram_chat_id=CHAT, telegram_bot_token="100027:test-bot-token", settings={"no_knowledge_policy": "escalate"}
    )
    kb.ingest_text(client_id=str(client.id), source="salon.md", text=KB, kind="markdown")
    return client


def _say(api, text: str, phone: str) -> None:
    assert api.post("/webhook/salon", json=chatflow_payload(text, phone=phone)).status_code == 200


def _a_day_of_traffic(api, chatflow, telegram) -> None:
    """One question answered, one the bot could not answer (a handover a manager takes by replying), one 'stop'."""
    _say(api, "До скольки работает салон?", "77010002701")
    wait_until(lambda: chatflow.sent_texts("77010002701"))
    _say(api, "Есть ли у вас парковка?", "77010002702")
    assert wait_until(lambda: chatflow.sent_texts("77010002702")) == [replies.FALLBACK_RESPONSES["no_knowledge"]]
    with session_scope() as session:
        topic_of = select(Conversation.telegram_topic_id).where(Conversation.telegram_topic_id.is_not(None))
        topic = wait_until(lambda: session.scalar(topic_of))
    update = make_message_update(next(_updates), CHAT, topic, make_user(701, "Анна"), "Да, во дворе.")
    assert api.post("/telegram-webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}).status_code == 200
    wait_until(lambda: "Да, во дворе." in chatflow.sent_texts("77010002702"))
    _say(api, "стоп, не пишите мне больше", "77010002703")
    wait_until(lambda: chatflow.sent_texts("77010002703"))


def _digests(telegram) -> list[str]:
    return [m.text or "" for m in telegram.messages(CHAT) if m.thread_id is None and "Сводка" in (m.text or "")]


def test_report_shows_the_days_figures(api, salon, chatflow, telegram, capsys):
    _a_day_of_traffic(api, chatflow, telegram)
    today = datetime.now(ALMATY).date().isoformat()
    capsys.readouterr()
    assert cli.main(["report", "--client", "salon", "--since", today, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["conversations"] == 3 and figures["customer_messages"] == 3
    assert figures["bot_replies"] == 3  # the answer, the handover's acknowledgement, the "stop" acknowledged
    assert figures["unanswered"] == 1 and figures["mutes"]["opt_outs"] == 1
    assert figures["handovers"]["total"] == 1 and figures["handovers"]["by_outcome"] == {"open": 1}
    assert figures["handovers"]["taken"] == 1 and figures["handovers"]["take_median_minutes"] is not None
    assert figures["top_unanswered"] == [{"question": "Есть ли у вас парковка?", "count": 1, "examples": []}]
    assert figures["undelivered"] == {"customers": 0, "telegram": 0}

    assert cli.main(["report", "--client", "salon", "--since", today]) == 0
    text = capsys.readouterr().out
    assert "Диалогов: 3" in text and "Передано менеджерам: 1 (ещё открыто 1)" in text and "1. Есть ли у вас парковка? — 1" in text
    assert cli.main(["report", "--client", "salon", "--since", "2999-01-01"]) == 2
    assert cli.main(["report", "--since", today]) == 2


def test_the_digest_is_posted_at_the_clients_local_time_in_the_general_topic(api, salon, chatflow, telegram):
    _a_day_of_traffic(api, chatflow, telegram)
    tomorrow = datetime.now(ALMATY).date() + timedelta(days=1)
    assert digest.send_due(datetime.combine(tomorrow, time(8, 59), ALMATY)) == 0  # default 09:00 local
    assert _digests(telegram) == []
    assert digest.send_due(datetime.combine(tomorrow, time(9, 0), ALMATY)) == 1
    [text] = wait_until(lambda: _digests(telegram))
    assert text.startswith(f"📊 Сводка за {tomorrow - timedelta(days=1):%d.%m.%Y}")
    assert "Диалогов: 3" in text and "Есть ли у вас парковка?" in text
    assert digest.send_due(datetime.combine(tomorrow, time(18, 0), ALMATY)) == 0
    assert len(_digests(telegram)) == 1


def test_a_day_without_traffic_sends_nothing(salon, telegram):
    tomorrow = datetime.now(ALMATY).date() + timedelta(days=1)
    assert digest.send_due(datetime.combine(tomorrow, time(9, 30), ALMATY)) == 0
    assert telegram.messages(CHAT) == []
    with session_scope() as session:
        assert session.execute(select(DailyDigest.day, DailyDigest.outbox_id)).all() == [(tomorrow - timedelta(days=1), None)]


def test_threads_racing_for_the_same_digest_send_it_once(api, salon, chatflow, telegram):
    _a_day_of_traffic(api, chatflow, telegram)
    today = datetime.now(ALMATY).date()
    start = threading.Barrier(4)
    results: list[bool] = []

    def race() -> None:
        start.wait()
        results.append(digest._send(salon.id, today, "Asia/Almaty"))

    threads = [threading.Thread(target=race) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == [False, False, False, True]
    assert len(wait_until(lambda: _digests(telegram))) == 1


def _process(telegram, now: datetime) -> subprocess.Popen[str]:
    """A separate service process running one tick of the digest task."""
    code = (
        "import sys; from datetime import datetime; from app import bootstrap; bootstrap.wire(); "
        "from app.services.operations import digest; print(digest.send_due(datetime.fromisoformat(sys.argv[1])))"
    )
    env = {**os.environ, "TELEGRAM_API_URL": telegram.url, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, now.isoformat()], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)


def test_two_processes_and_a_restart_send_one_digest(api, salon, chatflow, telegram):
    _a_day_of_traffic(api, chatflow, telegram)
    nine = datetime.combine(datetime.now(ALMATY).date() + timedelta(days=1), time(9, 5), ALMATY)
    first, second = _process(telegram, nine), _process(telegram, nine)
    outputs = sorted(process.communicate(timeout=120)[0].strip() for process in (first, second))
    assert outputs == ["0", "1"]
    assert len(_digests(telegram)) == 1
    restarted = _process(telegram, nine + timedelta(hours=3))
    assert restarted.communicate(timeout=120)[0].strip() == "0"
    assert len(_digests(telegram)) == 1
    with session_scope() as session:
        assert session.scalar(select(Handover.reason)) == "no_knowledge"
        assert len(session.execute(select(DailyDigest)).all()) == 1


def test_day_bounds_follow_the_clients_zone():
    start, end = digest.day_bounds(date(2026, 12, 1), "Asia/Almaty")
    assert (start.utcoffset(), end - start) == (timedelta(hours=5), timedelta(days=1))
