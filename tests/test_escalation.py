"""Handover to a human: the customer asks, a manager in Telegram takes it, talks, and gives it back."""

import concurrent.futures
import html
import itertools
import json
import re
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from app.db import session_scope
from app.models import (
    BotStatus,
    Conversation,
    ConversationState,
    Handover,
    HandoverEvent,
    HandoverReason,
    HandoverStatus,
    Message,
    MessageRole,
    MessageStatus,
    OutboxItem,
    OutboxStatus,
)
from app.services import replies
from app.services.handover import reminders
from fakes.telegram import make_callback_update, make_message_update, make_user
from tests.conftest import TELEGRAM_SECRET
from tests.helpers import chatflow_payload, wait_until

CHAT = -1001234567890
PHONE = "77015550101"
ANNA = make_user(501, "Анна")
BOLAT = make_user(502, "Болат")
_updates = itertools.count(1000)


@pytest.fixture
def salon(make_client, llm, chatflow, telegram):
    return make_client("salon", telegram_chat_id=CHAT, telegram_bot_token="100001:test-bot-token")


def say(api, text, phone=PHONE):
    assert api.post("/webhook/salon", json=chatflow_payload(text, phone=phone)).status_code == 200


def tg(api, update, secret=TELEGRAM_SECRET):
    return api.post("/telegram-webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": secret})


def handover() -> Handover:
    with session_scope() as session:
        found = session.scalar(select(Handover).order_by(Handover.created_at.desc()))
        assert found is not None
        return found


def conversation() -> Conversation:
    with session_scope() as session:
        found: Conversation | None = session.scalar(select(Conversation))
        assert found is not None
        return found


def escalated(api, telegram, chatflow, text="Позовите менеджера, пожалуйста"):
    """Customer asks for a human; returns (handover, topic id, card message id) once the card is pinned."""
    say(api, text)
    wait_until(lambda: telegram.pinned(CHAT), message="the pinned card")
    h = handover()
    topic = conversation().telegram_topic_id
    assert topic is not None and h.telegram_message_id is not None
    return h, topic, h.telegram_message_id


def press(api, card_id, topic, user, data):
    response = tg(api, make_callback_update(next(_updates), CHAT, card_id, topic, user, data))
    assert response.status_code == 200
    return response.json()


def visible(text: str) -> str:
    """What a manager sees of an HTML message: tags applied, entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def card(telegram, card_id):
    message = telegram.message(CHAT, card_id)
    assert message is not None
    return message


def test_request_for_a_human_opens_a_handover_with_a_pinned_card(api, salon, llm, chatflow, telegram):
    h, topic, card_id = escalated(api, telegram, chatflow)

    assert (h.status, h.reason) == (HandoverStatus.PENDING, HandoverReason.HUMAN_REQUEST)
    assert wait_until(lambda: chatflow.sent_texts(PHONE)) == [replies.HANDOVER_ACK]
    assert llm.chat_requests() == []  # the bot does not try to answer it itself
    [t] = telegram.topics(CHAT)
    assert t.message_thread_id == topic and t.name == f"Айгуль +{PHONE}"
    text = card(telegram, card_id).text
    assert "Нужен менеджер" in text and "просит менеджера" in text and "Позовите менеджера" in text
    assert card(telegram, card_id).callback_data() == [f"take_{h.id}", f"skip_{h.id}", f"resolve_{h.id}", f"return_{h.id}"]
    c = conversation()
    assert (c.state, c.bot_status) == (ConversationState.PENDING, BotStatus.MUTED)


def test_frustration_gets_a_softer_answer(api, salon, chatflow, telegram):
    escalated(api, telegram, chatflow, text="Безобразие, второй день не можете ответить!!!")
    assert wait_until(lambda: chatflow.sent_texts(PHONE)) == [replies.HANDOVER_ACK_FRUSTRATION]
    assert handover().reason == "frustration"


def test_negated_request_is_answered_by_the_bot(api, salon, llm, chatflow, telegram):
    llm.set_reply("Маникюр стоит 7000 тенге.")
    say(api, "Менеджера не надо, просто скажите цену маникюра")
    assert wait_until(lambda: chatflow.sent_texts(PHONE)) == ["Маникюр стоит 7000 тенге."]
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Handover)) == 0


def test_during_a_handover_the_customer_is_forwarded_and_the_bot_is_silent(api, salon, llm, chatflow, telegram):
    _h, topic, _ = escalated(api, telegram, chatflow)
    wait_until(lambda: chatflow.sent_texts(PHONE))
    say(api, "Цена <b>5000</b> & скидка_10% для __меня__?")

    forwarded = wait_until(lambda: [m for m in telegram.messages(CHAT, topic) if "скидка" in m.text], message="the forward")
    assert forwarded[0].parse_mode == "HTML"
    assert "Цена <b>5000</b> & скидка_10% для __меня__?" in visible(forwarded[0].text)  # shown verbatim, nothing broke
    time.sleep(0.5)
    assert chatflow.sent_texts(PHONE) == [replies.HANDOVER_ACK] and llm.chat_requests() == []


def test_take_assigns_and_a_second_manager_is_told_who_has_it(api, salon, chatflow, telegram):
    h, topic, card_id = escalated(api, telegram, chatflow)

    answer = press(api, card_id, topic, ANNA, f"take_{h.id}")
    assert answer["method"] == "answerCallbackQuery" and answer["show_alert"] is False
    assert (handover().status, handover().assigned_to) == (HandoverStatus.ACTIVE, "Анна")
    wait_until(lambda: card(telegram, card_id).callback_data() == [f"resolve_{h.id}", f"return_{h.id}"], message="buttons updated")
    assert "В работе · Анна" in visible(card(telegram, card_id).text)

    second = press(api, card_id, topic, BOLAT, f"take_{h.id}")
    assert second["show_alert"] is True and second["text"] == "Уже взял Анна"
    assert handover().assigned_to == "Анна"


def test_two_managers_pressing_take_at_once_get_one_owner(api, salon, chatflow, telegram):
    h, topic, card_id = escalated(api, telegram, chatflow)
    updates = [make_callback_update(next(_updates), CHAT, card_id, topic, user, f"take_{h.id}") for user in (ANNA, BOLAT)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        answers = [r.json() for r in pool.map(lambda u: tg(api, u), updates)]

    owner = handover().assigned_to
    assert owner in ("Анна", "Болат")
    assert sorted(a["show_alert"] for a in answers) == [False, True]
    assert any(a["text"] == f"Уже взял {owner}" for a in answers)
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(HandoverEvent).where(HandoverEvent.action == "take")) == 1


def test_resolve_unmutes_unpins_and_the_bot_continues_after_the_manager(api, salon, llm, chatflow, telegram):
    h, topic, card_id = escalated(api, telegram, chatflow)
    tg(api, make_message_update(next(_updates), CHAT, topic, ANNA, "Здравствуйте! Записала вас на 15:00."))
    wait_until(lambda: len(chatflow.sent_texts(PHONE)) == 2)

    press(api, card_id, topic, ANNA, f"resolve_{h.id}")
    assert handover().status == HandoverStatus.RESOLVED
    wait_until(lambda: telegram.pinned(CHAT) == [], message="card unpinned")
    wait_until(lambda: card(telegram, card_id).callback_data() == [], message="buttons removed")
    assert (conversation().state, conversation().bot_status) == (ConversationState.BOT, BotStatus.ACTIVE)

    llm.set_reply("Да, ждём вас в 15:00.")
    say(api, "Спасибо! А во сколько мне прийти?")
    wait_until(lambda: len(chatflow.sent_texts(PHONE)) == 3)
    history = [(m["role"], m["content"]) for m in llm.chat_requests()[-1]["messages"][1:]]
    assert ("assistant", "Здравствуйте! Записала вас на 15:00.") in history  # the manager spoke as the business
    assert history[-1] == ("user", "Спасибо! А во сколько мне прийти?")


def test_double_press_on_resolve_is_harmless(api, salon, chatflow, telegram):
    h, topic, card_id = escalated(api, telegram, chatflow)
    press(api, card_id, topic, ANNA, f"resolve_{h.id}")
    again = press(api, card_id, topic, ANNA, f"resolve_{h.id}")
    assert again["text"] == "Заявка уже закрыта"
    wait_until(lambda: _outbox_settled(), message="card edits delivered")
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(OutboxItem).where(OutboxItem.status == OutboxStatus.FAILED)) == 0


def test_skip_is_recorded_and_the_card_stays(api, salon, chatflow, telegram):
    h, topic, card_id = escalated(api, telegram, chatflow)
    answer = press(api, card_id, topic, BOLAT, f"skip_{h.id}")
    assert "Пропущено" in answer["text"]
    assert handover().status == HandoverStatus.PENDING and telegram.pinned(CHAT) == [card_id]
    with session_scope() as session:
        assert session.scalar(select(HandoverEvent.actor_name).where(HandoverEvent.action == "skip")) == "Болат"


def test_return_to_bot(api, salon, chatflow, telegram):
    h, topic, card_id = escalated(api, telegram, chatflow)
    press(api, card_id, topic, ANNA, f"return_{h.id}")
    assert handover().status == HandoverStatus.BOT_HANDLING
    assert (conversation().state, conversation().bot_status) == (ConversationState.BOT, BotStatus.ACTIVE)


def test_manager_reply_reaches_whatsapp_and_is_confirmed(api, salon, chatflow, telegram):
    _h, topic, _ = escalated(api, telegram, chatflow)
    update = make_message_update(next(_updates), CHAT, topic, ANNA, "Добрый день! Чем могу помочь?")
    assert tg(api, update).json() == {"ok": True}

    wait_until(lambda: "Добрый день! Чем могу помочь?" in chatflow.sent_texts(PHONE), message="delivered to WhatsApp")
    wait_until(lambda: [m for m in telegram.messages(CHAT, topic) if m.text == "✅ Доставлено"], message="confirmation")
    [confirm] = [c for c in telegram.calls("sendMessage") if c["text"] == "✅ Доставлено"]
    assert confirm["reply_parameters"]["message_id"] == update["message"]["message_id"]  # a reply to the manager's message
    assert (handover().status, handover().assigned_to) == (HandoverStatus.ACTIVE, "Анна")  # replying took it
    with session_scope() as session:
        stored = session.scalar(select(Message).where(Message.role == MessageRole.MANAGER))
        assert stored is not None and (stored.content, stored.status) == ("Добрый день! Чем могу помочь?", MessageStatus.SENT)


def test_manager_reply_when_whatsapp_is_down_is_reported_in_the_topic(api, salon, chatflow, telegram, monkeypatch):
    from app.config import settings

    _h, topic, _ = escalated(api, telegram, chatflow)
    wait_until(lambda: chatflow.sent_texts(PHONE))
    monkeypatch.setattr(settings, "outbox_max_attempts", 2)  # one retry: the first failure says it will be retried
    chatflow.fail(503, times=None)

    tg(api, make_message_update(next(_updates), CHAT, topic, ANNA, "Вы на связи?"))

    # Both notices are outbox items of their own: they may reach the topic in either order.
    wait_until(lambda: any(m.text.startswith("⚠️ Пока не доставлено") for m in telegram.messages(CHAT, topic)), message="first notice")
    wait_until(
        lambda: any(m.text.startswith("⚠️ Не доставлено клиенту") for m in telegram.messages(CHAT, topic)),
        timeout=20,
        message="final failure notice",
    )
    with session_scope() as session:
        assert session.scalar(select(Message.status).where(Message.role == MessageRole.MANAGER)) == MessageStatus.FAILED


def test_deleted_topic_is_recreated(api, salon, chatflow, telegram):
    _h, topic, _ = escalated(api, telegram, chatflow)
    telegram.delete_topic(CHAT, topic)

    say(api, "Алло, вы тут?")

    wait_until(lambda: conversation().telegram_topic_id not in (None, topic), message="a new topic")
    new_topic = conversation().telegram_topic_id
    wait_until(lambda: any("Алло, вы тут?" in m.text for m in telegram.messages(CHAT, new_topic)), message="forward in the new topic")


def test_a_card_whose_topic_was_deleted_is_posted_again_in_a_new_topic(api, salon, chatflow, telegram):
    h, topic, card_id = escalated(api, telegram, chatflow)
    wait_until(lambda: chatflow.sent_texts(PHONE))
    telegram.delete_topic(CHAT, topic)  # a manager deleted the topic, the card with it

    press(api, card_id, topic, ANNA, f"take_{h.id}")  # Anna pressed before her app caught up with the deletion

    [new_topic] = wait_until(lambda: [t.message_thread_id for t in telegram.topics(CHAT)], message="a new topic")
    [taken] = wait_until(lambda: [m for m in telegram.messages(CHAT, new_topic) if "В работе · Анна" in visible(m.text)], message="card")
    assert taken.callback_data() == [f"resolve_{h.id}", f"return_{h.id}"] and telegram.pinned(CHAT) == [taken.message_id]
    assert (handover().status, conversation().bot_status) == (HandoverStatus.ACTIVE, BotStatus.MUTED)

    say(api, "Спасибо, жду")  # the customer lands in the same new topic, the bot stays silent
    wait_until(lambda: any("Спасибо, жду" in m.text for m in telegram.messages(CHAT, new_topic)), message="forward in the new topic")
    assert [t.message_thread_id for t in telegram.topics(CHAT)] == [new_topic] and chatflow.sent_texts(PHONE) == [replies.HANDOVER_ACK]


def test_telegram_429_is_waited_out(api, salon, chatflow, telegram):
    telegram.rate_limit(retry_after=1, method="sendMessage")
    started = time.monotonic()
    escalated(api, telegram, chatflow)
    assert time.monotonic() - started >= 1.0


def test_same_update_twice_is_handled_once(api, salon, chatflow, telegram):
    _h, topic, _ = escalated(api, telegram, chatflow)
    update = make_message_update(next(_updates), CHAT, topic, ANNA, "Один раз")
    tg(api, update)
    tg(api, update)
    wait_until(lambda: "Один раз" in chatflow.sent_texts(PHONE))
    time.sleep(0.5)
    assert chatflow.sent_texts(PHONE).count("Один раз") == 1


def test_telegram_webhook_requires_the_secret(api, salon, telegram):
    update = make_message_update(next(_updates), CHAT, 5, ANNA, "hi")
    assert tg(api, update, secret="wrong").status_code == 401
    assert api.post("/telegram-webhook", json=update).status_code == 401


def test_customer_no_mutes_the_bot_without_a_handover(api, salon, llm, chatflow, telegram):
    say(api, "Стоп, не пишите мне больше")
    assert wait_until(lambda: chatflow.sent_texts(PHONE)) == [replies.OPT_OUT_ACK]
    c = conversation()
    assert c.bot_status == BotStatus.MUTED and c.mute_count == 1 and c.bot_muted_until is not None
    muted_for = c.bot_muted_until - c.updated_at
    assert timedelta(minutes=29) < muted_for <= timedelta(minutes=31)

    say(api, "Сколько стоит стрижка?")
    time.sleep(0.8)
    assert chatflow.sent_texts(PHONE) == [replies.OPT_OUT_ACK] and llm.chat_requests() == []

    with session_scope() as session:  # the mute ran out
        session.execute(update(Conversation).values(bot_muted_until=func.now() - timedelta(seconds=1)))
    say(api, "отстаньте")
    wait_until(lambda: len(chatflow.sent_texts(PHONE)) == 2)
    c = conversation()
    assert c.mute_count == 2 and c.bot_muted_until is not None and c.bot_muted_until - c.updated_at > timedelta(hours=23)
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Handover)) == 0


def test_bot_answers_again_when_the_mute_expires(api, salon, llm, chatflow, telegram):
    llm.set_reply("Мы работаем до 20:00.")
    say(api, "стоп")
    wait_until(lambda: chatflow.sent_texts(PHONE))
    with session_scope() as session:
        session.execute(update(Conversation).values(bot_muted_until=func.now() - timedelta(seconds=1)))
    say(api, "До скольки работаете?")
    assert wait_until(lambda: len(chatflow.sent_texts(PHONE)) == 2 and chatflow.sent_texts(PHONE))[-1] == "Мы работаем до 20:00."


def test_customer_no_while_waiting_cancels_the_handover(api, salon, chatflow, telegram):
    _h, topic, _card_id = escalated(api, telegram, chatflow)
    wait_until(lambda: chatflow.sent_texts(PHONE))
    say(api, "Не надо, отстаньте")
    wait_until(lambda: handover().status == HandoverStatus.RESOLVED, message="handover cancelled")
    wait_until(lambda: telegram.pinned(CHAT) == [])
    wait_until(lambda: any("отказался" in m.text for m in telegram.messages(CHAT, topic)), message="the notice for managers")
    assert conversation().bot_status == BotStatus.MUTED


def test_staff_writing_from_the_business_phone_mutes_the_bot(api, salon, llm, chatflow, telegram):
    staff = chatflow_payload("Здравствуйте, это Алия из салона, отвечу вам сама", phone=PHONE)
    staff["metadata"]["fromMe"] = True
    api.post("/webhook/salon", json=staff)
    say(api, "Хорошо, жду")
    time.sleep(0.8)
    assert chatflow.sent_texts(PHONE) == [] and llm.chat_requests() == []
    assert conversation().bot_status == BotStatus.MUTED


def test_repeated_requests_in_cooldown_do_not_open_new_handovers(api, salon, chatflow, telegram):
    h, topic, card_id = escalated(api, telegram, chatflow)
    press(api, card_id, topic, ANNA, f"resolve_{h.id}")
    say(api, "Менеджера позовите!")
    wait_until(lambda: replies.HANDOVER_ALREADY in chatflow.sent_texts(PHONE), message="the 'already' answer")
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Handover)) == 1
    assert wait_until(lambda: any("снова просит" in m.text for m in telegram.messages(CHAT)))


def test_manager_can_be_announced_to_the_customer(api, make_client, llm, chatflow, telegram):
    make_client("salon", telegram_chat_id=CHAT, telegram_bot_token="100001:test-bot-token", settings={"announce_manager": True})
    h, topic, card_id = escalated(api, telegram, chatflow)
    press(api, card_id, topic, ANNA, f"take_{h.id}")
    wait_until(lambda: "Вам отвечает менеджер Анна." in chatflow.sent_texts(PHONE))


def test_ai_error_handover_reaches_telegram(api, salon, llm, chatflow, telegram):
    llm.server_error(500, times=None)
    say(api, "Какие у вас цены?")
    wait_until(lambda: telegram.pinned(CHAT))
    assert handover().reason == "ai_error"
    assert "ошибка AI" in card(telegram, handover().telegram_message_id).text


def test_reminders_then_auto_close_count_from_when_the_handover_opened(api, make_client, chatflow, telegram):
    make_client("salon", telegram_chat_id=CHAT, telegram_bot_token="100001:test-bot-token", settings={"owner_username": "salon_owner"})
    _h, topic, card_id = escalated(api, telegram, chatflow)
    wait_until(lambda: chatflow.sent_texts(PHONE))

    def idle(minutes: int) -> None:
        with session_scope() as session:
            session.execute(update(Handover).values(created_at=func.now() - timedelta(minutes=minutes)))

    idle(29)
    assert reminders.check_open() == 0
    idle(31)
    assert reminders.check_open() == 1
    assert reminders.check_open() == 0  # reminded once
    idle(61)
    assert reminders.check_open() == 1
    _deliver_all()
    texts = [m.text for m in telegram.messages(CHAT, topic)]
    assert any(t.startswith("⏰") for t in texts) and any("Срочно" in t and "@salon_owner" in t for t in texts)

    idle(121)
    assert reminders.check_open() == 1
    _deliver_all()
    assert handover().status == HandoverStatus.TIMEOUT
    assert replies.HANDOVER_TIMEOUT in chatflow.sent_texts(PHONE)
    assert telegram.pinned(CHAT) == [] and card(telegram, card_id).callback_data() == []
    assert (conversation().state, conversation().bot_status) == (ConversationState.BOT, BotStatus.ACTIVE)


def _outbox_settled() -> bool:
    with session_scope() as session:
        return not session.scalar(
            select(func.count()).select_from(OutboxItem).where(OutboxItem.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING)))
        )


def _deliver_all() -> None:
    from app.services.channels import outbox

    with session_scope() as session:
        ids = list(session.scalars(select(OutboxItem.id).where(OutboxItem.status == OutboxStatus.PENDING).order_by(OutboxItem.created_at)))
    for item_id in ids:
        outbox.deliver(item_id)


def test_cli_telegram_check_and_set_webhook(salon, telegram, capsys):
    from app import cli

    assert cli.main(["telegram", "check", "--client", "salon"]) == 0
    out = capsys.readouterr().out
    assert "ok    bot can manage topics" in out and "ok    bot can pin messages" in out

    assert cli.main(["telegram", "set-webhook", "--client", "salon", "--url", "https://bot.example"]) == 0
    hook = telegram.webhook()
    # The bot's own path and a secret of its own, not the deployment's shared one.
    assert hook["url"] == "https://bot.example/telegram-webhook/100001"
    assert len(hook["secret_token"]) >= 32 and hook["secret_token"] != TELEGRAM_SECRET


def test_cli_telegram_check_reports_missing_rights(make_client, telegram, capsys, monkeypatch):
    make_client("salon", telegram_chat_id=CHAT, telegram_bot_token="100001:test-bot-token")
    monkeypatch.setattr(telegram, "bot_rights", {**telegram.bot_rights, "can_pin_messages": False})
    from app import cli

    assert cli.main(["telegram", "check", "--client", "salon"]) == 1
    assert "FAIL  bot can pin messages" in capsys.readouterr().out


def test_cli_intent_json(capsys):
    from app import cli

    assert cli.main(["intent", "Менеджер керек", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["intent"], shown["escalate"]) == ("human_request", True)
    assert shown["rule"] == {"intent": "human_request", "confidence": 0.95}
    assert len(shown["probabilities"]) == 8 and shown["probabilities"]["human_request"] > 0.5
