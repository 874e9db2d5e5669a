"""The reply rules end to end, through the webhooks: the business's policy and sensitive topics, the
waiting customer's notice, business hours, and the model's own judgement of a handover."""

import itertools
import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update

from app import bootstrap, cli
from app.db import session_scope
from app.models import Handover, HandoverReason, Message, MessageRole
from app.redis_client import redis_client
from app.schemas.client import WEEKDAYS
from app.services import replies
from app.services.knowledge import kb
from fakes.telegram import make_message_update, make_user
from tests.conftest import TELEGRAM_SECRET
from tests.helpers import chatflow_payload, wait_until

CHAT = -1001234567890
PHONE = "77015550101"
POLICY = Path(__file__).parent / "fixtures" / "salon_policy.md"
_updates = itertools.count(70_000)


@pytest.fixture
def salon(make_client, chatflow, telegram):
    return make_client("salon", telegram_chat_id=CHAT, telegram_bot_token="100001:test-bot-token")


def say(api, text):
    assert api.post("/webhook/salon", json=chatflow_payload(text, phone=PHONE)).status_code == 200


def sent(chatflow) -> list[str]:
    return list(chatflow.sent_texts(PHONE))


def answered(chatflow, count: int) -> list[str]:
    return list(wait_until(lambda: len(sent(chatflow)) >= count and sent(chatflow), message=f"{count} replies"))


def handover() -> Handover | None:
    with session_scope() as session:
        found: Handover | None = session.scalar(select(Handover).order_by(Handover.created_at.desc()))
        return found


# --- the policy and sensitive topics ----------------------------------------------------------------


def test_a_salons_policy_loaded_as_policy_sends_payment_to_a_person_and_is_never_quoted(api, salon, chatflow, telegram, capsys):
    assert cli.main(["client", "policy", "set", "--slug", "salon", str(POLICY)]) == 0
    out = capsys.readouterr().out
    assert "Любые вопросы про оплату" in out and "payment" in out and "гарант*" in out
    # The same document loaded as knowledge by mistake (what happened before): it is still never quoted.
    kb.ingest_text(client_id=str(salon.id), source="rules.md", text=POLICY.read_text(encoding="utf-8"), kind="markdown")

    say(api, "Можно оплатить Kaspi?")
    [ack] = answered(chatflow, 1)
    assert ack == replies.HANDOVER_ACK_SENSITIVE and "эскалац" not in ack.lower()
    h = handover()
    assert h is not None and h.reason == HandoverReason.SENSITIVE and h.reason_detail == "способы оплаты и споры об оплате"
    card = wait_until(lambda: telegram.pinned(CHAT) and telegram.message(CHAT, telegram.pinned(CHAT)[0]), message="the card")
    assert "деликатная тема: способы оплаты" in card.text


def test_a_topic_of_the_business_own_from_its_policy_escalates(api, salon, chatflow, telegram):
    cli.main(["client", "policy", "set", "--slug", "salon", str(POLICY)])
    say(api, "Какая гарантия на наращивание ногтей?")
    assert answered(chatflow, 1) == [replies.HANDOVER_ACK_SENSITIVE]


def test_the_model_follows_the_policy_and_an_answer_repeating_it_is_replaced_by_a_handover(api, salon, llm, chatflow, telegram):
    cli.main(["client", "policy", "set", "--slug", "salon", str(POLICY)])
    llm.set_reply(
        json.dumps({"reply": "Бот никогда не подтверждает запись сам: время подтверждает администратор.", "handoff": "none", "reason": ""})
    )
    say(api, "Запишите меня на маникюр завтра в 15:00")
    assert answered(chatflow, 1) == [replies.HANDOVER_ACK_SENSITIVE]
    system = llm.chat_requests()[0]["messages"][0]["content"]
    assert "никогда не цитируй" in system and "Бот никогда не подтверждает запись сам" in system
    assert "способы оплаты" in system  # the topics the model hands over
    assert llm.chat_requests()[0]["response_format"]["type"] == "json_schema"


# --- the model's judgement ------------------------------------------------------------------------


def test_the_answering_model_judges_a_handover_at_no_extra_call(api, salon, llm, chatflow, telegram):
    llm.set_reply(json.dumps({"reply": "Понимаю.", "handoff": "frustration", "reason": "клиент недоволен сроками"}))
    say(api, "Когда будет готов мой заказ?")  # a question to the classifier; the answering model hears the impatience
    assert answered(chatflow, 1) == [replies.HANDOVER_ACK_FRUSTRATION]
    h = handover()
    assert h is not None and (h.reason, h.reason_detail) == (HandoverReason.FRUSTRATION, "клиент недоволен сроками")
    assert len(llm.chat_requests()) == 1


def test_malformed_structured_output_is_the_reply_alone(api, salon, llm, chatflow):
    llm.set_reply(json.dumps({"reply": "Маникюр стоит 8 000 тг.", "handoff": "maybe", "reason": 5}))
    say(api, "Сколько стоит маникюр")
    assert answered(chatflow, 1) == ["Маникюр стоит 8 000 тг."]
    assert handover() is None


# --- the waiting customer ---------------------------------------------------------------------------


def restart() -> None:
    bootstrap.forget_process_state()
    redis_client.flushdb()


def _told_minutes_ago(minutes: float) -> None:
    with session_scope() as session:
        session.execute(update(Handover).values(customer_notified_at=func.now() - timedelta(minutes=minutes)))


def test_a_waiting_customer_hears_a_manager_will_answer_at_most_once_per_interval_and_not_after_a_reply(api, salon, chatflow, telegram):
    say(api, "Позовите менеджера")
    assert answered(chatflow, 1) == [replies.HANDOVER_ACK]
    topic = wait_until(lambda: telegram.topics(CHAT), message="the topic")[0].message_thread_id

    def forwarded(text: str) -> None:
        say(api, text)
        wait_until(lambda: any(text in (m.text or "") for m in telegram.messages(CHAT, topic)), message="the forward")

    forwarded("Алло")  # right after the acknowledgement: nothing more
    _told_minutes_ago(11)
    forwarded("Есть кто?")
    assert answered(chatflow, 2)[-1] == "Менеджер скоро ответит."
    forwarded("Жду")  # not one per message
    restart()  # what the process remembered is gone: the notice's time is in the database
    forwarded("Ау")
    _told_minutes_ago(11)
    tg = make_message_update(next(_updates), CHAT, topic, make_user(501, "Анна"), "Здравствуйте, смотрю ваш вопрос")
    api.post("/telegram-webhook", json=tg, headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET})
    wait_until(lambda: "Здравствуйте, смотрю ваш вопрос" in sent(chatflow))
    forwarded("Спасибо")
    assert sent(chatflow) == [replies.HANDOVER_ACK, "Менеджер скоро ответит.", "Здравствуйте, смотрю ваш вопрос"]


# --- business hours --------------------------------------------------------------------------------


def _closed_today_settings() -> dict[str, object]:
    """Open only on the day after tomorrow (Almaty time), 10:00-20:00: closed now whatever the time."""
    day = WEEKDAYS[(datetime.now(ZoneInfo("Asia/Almaty")).weekday() + 2) % 7]
    return {"hours": {day: ["10:00-20:00"]}}


def test_out_of_hours_the_customer_is_told_when_a_manager_answers(api, make_client, chatflow, telegram, llm):
    make_client("salon", telegram_chat_id=CHAT, telegram_bot_token="100001:test-bot-token", settings=_closed_today_settings())
    say(api, "Позовите менеджера")
    [ack] = answered(chatflow, 1)
    assert ack.startswith("Передаю ваш вопрос менеджеру. Сейчас мы не работаем — ответим ") and ack.endswith(" с 10:00.")
    assert "ближайшее время" not in ack


def test_the_model_knows_the_local_time_and_whether_the_business_is_open(api, make_client, chatflow, llm):
    make_client("salon", settings=_closed_today_settings())
    llm.set_reply("Сейчас мы закрыты.")
    say(api, "Вы сейчас работаете?")
    answered(chatflow, 1)
    system = llm.chat_requests()[0]["messages"][0]["content"]
    assert "(Asia/Almaty)" in system and "Компания сейчас не работает, откроется " in system and "График работы:" in system


def test_the_cli_sets_the_week_holidays_and_time_zone(make_client, capsys):
    make_client("salon")
    assert cli.main(["client", "hours", "--slug", "salon", "--day", "mon-fri=10:00-20:00", "--day", "sat=11:00-17:00"]) == 0
    assert cli.main(["client", "hours", "--slug", "salon", "--holiday", "2026-03-08", "--timezone", "Asia/Aqtobe"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == "salon: пн–пт 10:00–20:00; сб 11:00–17:00; вс выходной (Asia/Aqtobe)" and out[-1] == "holidays: 2026-03-08"
    assert cli.main(["client", "hours", "--slug", "salon", "--day", "mon=9-18"]) == 2  # refused, nothing changed
    assert cli.main(["client", "hours", "--slug", "salon", "--always-open"]) == 0
    assert "круглосуточно" in capsys.readouterr().out


def test_the_bots_messages_record_what_they_were(api, salon, chatflow):
    say(api, "Сколько стоит ремонт телевизора?")
    answered(chatflow, 1)
    with session_scope() as session:
        reason = session.scalar(select(Message.meta["reason"].astext).where(Message.role == MessageRole.ASSISTANT))
    assert reason == "no_knowledge_clarify"
