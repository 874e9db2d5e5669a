"""Every open handover ends: reminders, urgent reminders and auto-close of pending and taken handovers,
decided from stored timestamps in working time, each notice exactly once, also across a restart."""

import itertools
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text, update

from app import bootstrap
from app.db import session_scope
from app.models import BotStatus, Conversation, ConversationState, Handover, HandoverOutcome, HandoverStatus, OutboxItem, OutboxStatus
from app.redis_client import redis_client
from app.services import replies
from app.services.channels import outbox
from app.services.handover import reminders
from fakes.telegram import make_callback_update, make_message_update, make_user
from tests.conftest import TELEGRAM_SECRET
from tests.helpers import chatflow_payload, wait_until

CHAT = -1001234567890
PHONE = "77015550101"
ANNA = make_user(501, "Анна")
_updates = itertools.count(50_000)
_CLOCKS = (
    "created_at",
    "taken_at",
    "last_activity_at",
    "last_customer_message_at",
    "last_manager_reply_at",
    "active_reminder_sent_at",
    "active_urgent_sent_at",
    "customer_notified_at",
)


@pytest.fixture
def salon(make_client, llm, chatflow, telegram):
    return make_client(
        "salon", telegram_chat_id=CHAT, telegram_bot_token="100001:test-bot-token", settings={"owner_username": "salon_owner"}
    )


def say(api, text_):
    assert api.post("/webhook/salon", json=chatflow_payload(text_, phone=PHONE)).status_code == 200


def tg(api, update_):
    response = api.post("/telegram-webhook", json=update_, headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET})
    assert response.status_code == 200
    return response.json()


def handover() -> Handover:
    with session_scope() as session:
        found: Handover | None = session.scalar(select(Handover))
        assert found is not None
        return found


def conversation() -> Conversation:
    with session_scope() as session:
        found: Conversation | None = session.scalar(select(Conversation))
        assert found is not None
        return found


def escalate(api, telegram, chatflow) -> tuple[Handover, int]:
    say(api, "Позовите менеджера, пожалуйста")
    wait_until(lambda: telegram.pinned(CHAT), message="the pinned card")
    wait_until(lambda: chatflow.sent_texts(PHONE), message="the acknowledgement")
    topic = conversation().telegram_topic_id
    assert topic is not None
    return handover(), topic


def later(minutes: float) -> None:
    """Move the clock: every stored time of the handover goes back by this much."""
    values = {name: text(f"{name} - make_interval(secs => {minutes * 60})") for name in _CLOCKS}
    with session_scope() as session:
        session.execute(update(Handover).values(values))
        session.execute(text("UPDATE messages SET created_at = created_at - make_interval(secs => :s)"), {"s": minutes * 60})


def restart() -> None:
    """What a restart loses: the process's memory and the queued jobs (Redis); the database stays."""
    bootstrap.forget_process_state()
    redis_client.flushdb()


def deliver_all() -> None:
    """What the maintenance sweep does with queued items whose jobs were lost."""
    with session_scope() as session:
        ids = list(session.scalars(select(OutboxItem.id).where(OutboxItem.status == OutboxStatus.PENDING).order_by(OutboxItem.created_at)))
    for item_id in ids:
        outbox.deliver(item_id)


def topic_texts(telegram, topic) -> list[str]:
    return [m.text or "" for m in telegram.messages(CHAT, topic)]


def customer_waits(api, telegram, text_: str) -> None:
    say(api, text_)
    wait_until(lambda: any(text_ in t for t in (m.text or "" for m in telegram.messages(CHAT))), message="the forward")


def test_a_pending_handover_counts_from_when_it_opened_and_each_notice_goes_once_across_restarts(api, salon, chatflow, telegram):
    _h, topic = escalate(api, telegram, chatflow)
    later(25)
    customer_waits(api, telegram, "Алло, есть кто?")  # writing again does not push the reminder back
    later(6)
    assert reminders.check_open() == 1
    assert reminders.check_open() == 0
    restart()
    deliver_all()
    [reminder] = [t for t in topic_texts(telegram, topic) if t.startswith("⏰")]
    assert "уже 31 мин." in reminder and "написал ещё 1" in reminder

    later(30)
    restart()
    assert reminders.check_open() == 1  # urgent, tagging the owner
    restart()
    assert reminders.check_open() == 0
    deliver_all()
    assert sum("Срочно" in t and "@salon_owner" in t for t in topic_texts(telegram, topic)) == 1

    later(60)
    assert reminders.check_open() == 1
    assert reminders.check_open() == 0
    deliver_all()
    h = handover()
    assert (h.status, h.outcome) == (HandoverStatus.TIMEOUT, HandoverOutcome.UNTAKEN)
    assert chatflow.sent_texts(PHONE).count(replies.HANDOVER_TIMEOUT) == 1
    assert (conversation().state, conversation().bot_status) == (ConversationState.BOT, BotStatus.ACTIVE)


def test_a_taken_handover_reminds_the_assignee_of_an_unanswered_customer_then_tags_the_owner(api, salon, chatflow, telegram):
    h, topic = escalate(api, telegram, chatflow)
    tg(api, make_callback_update(next(_updates), CHAT, h.telegram_message_id or 0, topic, ANNA, f"take_{h.id}"))
    later(29)
    assert reminders.check_open() == 0  # taking it gives the assignee the full time
    later(2)
    assert reminders.check_open() == 1
    assert reminders.check_open() == 0
    restart()
    later(30)
    assert reminders.check_open() == 1
    assert reminders.check_open() == 0
    deliver_all()
    texts = topic_texts(telegram, topic)
    [reminder] = [t for t in texts if t.startswith("⏰")]
    [urgent] = [t for t in texts if "Срочно" in t]
    assert "Анна" in reminder and "@salon_owner" in urgent
    [mention] = [c for c in telegram.calls("sendMessage") if c["text"].startswith("⏰")]
    assert 'href="tg://user?id=501"' in mention["text"]  # Telegram notifies the assignee

    # The manager answers: the wait is over. The customer writes again: a new wait, reminded again.
    tg(api, make_message_update(next(_updates), CHAT, topic, ANNA, "Здравствуйте! Сейчас посмотрю."))
    wait_until(lambda: "Здравствуйте! Сейчас посмотрю." in chatflow.sent_texts(PHONE))
    later(40)
    assert reminders.check_open() == 0
    customer_waits(api, telegram, "Спасибо, жду")
    later(31)
    assert reminders.check_open() == 1
    assert reminders.check_open() == 0


def test_a_taken_handover_with_an_unanswered_customer_is_closed_after_long_silence_and_the_customer_is_told(api, salon, chatflow, telegram):
    h, topic = escalate(api, telegram, chatflow)
    tg(api, make_callback_update(next(_updates), CHAT, h.telegram_message_id or 0, topic, ANNA, f"take_{h.id}"))
    later(719)
    reminders.check_open()  # the reminders of this wait
    reminders.check_open()
    restart()
    later(2)
    assert reminders.check_open() == 1
    assert reminders.check_open() == 0
    deliver_all()
    closed = handover()
    assert (closed.status, closed.outcome) == (HandoverStatus.TIMEOUT, HandoverOutcome.SILENT)
    assert chatflow.sent_texts(PHONE).count(replies.HANDOVER_CLOSED_UNANSWERED) == 1
    card = telegram.message(CHAT, h.telegram_message_id)
    assert card is not None and "Закрыто автоматически" in card.text and card.callback_data() == []
    assert telegram.pinned(CHAT) == []
    assert (conversation().state, conversation().bot_status) == (ConversationState.BOT, BotStatus.ACTIVE)


def test_after_the_managers_last_word_silence_closes_quietly_without_reminders(api, salon, chatflow, telegram):
    _h, topic = escalate(api, telegram, chatflow)
    tg(api, make_message_update(next(_updates), CHAT, topic, ANNA, "Записала вас на завтра, до встречи!"))
    wait_until(lambda: "Записала вас на завтра, до встречи!" in chatflow.sent_texts(PHONE))
    later(700)
    assert reminders.check_open() == 0  # nobody waits for anyone
    later(21)
    assert reminders.check_open() == 1
    deliver_all()
    assert handover().outcome == HandoverOutcome.SILENT
    assert replies.HANDOVER_CLOSED_QUIET in chatflow.sent_texts(PHONE)
    assert replies.HANDOVER_CLOSED_UNANSWERED not in chatflow.sent_texts(PHONE)


def test_the_clocks_stop_outside_business_hours(api, make_client, chatflow, telegram, llm):
    week = {day: ["10:00-20:00"] for day in ("mon", "tue", "wed", "thu", "fri")}
    make_client("salon", telegram_chat_id=CHAT, telegram_bot_token="100001:test-bot-token", settings={"hours": week})
    _h, topic = escalate(api, telegram, chatflow)
    almaty = ZoneInfo("Asia/Almaty")
    opened = datetime(2026, 3, 3, 19, 50, tzinfo=almaty)  # a Tuesday, ten minutes before closing
    with session_scope() as session:
        session.execute(update(Handover).values(created_at=opened, last_customer_message_at=opened))

    assert reminders.check_open(now=datetime(2026, 3, 4, 10, 15, tzinfo=almaty)) == 0  # 25 working minutes, 14 hours later
    assert reminders.check_open(now=datetime(2026, 3, 4, 10, 21, tzinfo=almaty)) == 1
    deliver_all()
    [reminder] = [t for t in topic_texts(telegram, topic) if t.startswith("⏰")]
    assert "с 19:50 вчера" in reminder
    assert reminders.check_open(now=datetime(2026, 3, 4, 11, 39, tzinfo=almaty)) == 1  # urgent at 60 working minutes
    assert reminders.check_open(now=datetime(2026, 3, 4, 11, 41, tzinfo=almaty)) == 0
    assert reminders.check_open(now=datetime(2026, 3, 4, 11, 51, tzinfo=almaty)) == 1  # auto-close at 120
    assert handover().outcome == HandoverOutcome.UNTAKEN


def test_a_customer_who_withdraws_is_counted_as_cancelled(api, salon, chatflow, telegram):
    escalate(api, telegram, chatflow)
    say(api, "Не надо, отстаньте")
    wait_until(lambda: handover().outcome == HandoverOutcome.CANCELLED, message="cancelled")
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Handover).where(Handover.status == HandoverStatus.RESOLVED)) == 1
