"""Booking in the chat, end to end through the webhooks: the customer asks for a time in Russian, Kazakh or Latin
letters, the bot collects what is missing one question at a time (durably: a restart changes nothing), the card
goes to the customer's topic, and a manager confirms, declines or proposes another time with one tap."""

import concurrent.futures
import html
import itertools
import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from app import bootstrap, cli
from app.db import session_scope
from app.models import BookingRequest, BookingStatus, Handover, OutboxItem
from app.redis_client import redis_client
from app.schemas.client import WEEKDAYS
from app.services.booking import texts
from fakes.telegram import make_callback_update, make_message_update, make_user
from tests.conftest import TELEGRAM_SECRET
from tests.helpers import chatflow_payload, wait_until

CHAT = -1001234567890
PHONE = "77015550101"
SERVICES = Path(__file__).parent / "fixtures" / "salon_services.yaml"
ALMATY = ZoneInfo("Asia/Almaty")
ANNA = make_user(501, "Анна")
BOLAT = make_user(502, "Болат")
_updates = itertools.count(90_000)


@pytest.fixture
def salon(make_client, chatflow, telegram):
    client = make_client("salon", telegram_chat_id=CHAT, telegram_bot_token="100001:test-bot-token", settings={"booking_enabled": True})
    assert cli.main(["services", "load", "--client", "salon", str(SERVICES)]) == 0
    return client


def say(api, text):
    assert api.post("/webhook/salon", json=chatflow_payload(text, phone=PHONE)).status_code == 200


def sent(chatflow) -> list[str]:
    return list(chatflow.sent_texts(PHONE))


def exchange(api, chatflow, text):
    """The customer writes; the bot's one answer."""
    before = len(sent(chatflow))
    say(api, text)
    return wait_until(lambda: len(sent(chatflow)) > before and sent(chatflow)[-1], message=f"the answer to {text!r}")


def booking() -> BookingRequest:
    with session_scope() as session:
        found = session.scalar(select(BookingRequest).order_by(BookingRequest.created_at.desc()).limit(1))
        assert found is not None
        return found


def tomorrow() -> datetime:
    return datetime.now(ALMATY) + timedelta(days=1)


def card(telegram):
    """The booking card in the customer's topic, once it is there."""
    return wait_until(lambda: booking().telegram_message_id and telegram.message(CHAT, booking().telegram_message_id), message="the card")


def card_text(telegram) -> str:
    """What a manager reads on the card (HTML tags applied)."""
    return html.unescape(re.sub(r"<[^>]+>", "", card(telegram).text))


def press(api, telegram, user, action):
    b = booking()
    assert b.telegram_message_id is not None
    update = make_callback_update(next(_updates), CHAT, b.telegram_message_id, _topic(telegram), user, f"{action}_{b.id}")
    return api.post("/telegram-webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}).json()


def _topic(telegram):
    return wait_until(lambda: telegram.topics(CHAT), message="the topic")[0].message_thread_id


def manager_writes(api, telegram, user, text):
    update = make_message_update(next(_updates), CHAT, _topic(telegram), user, text)
    assert api.post("/telegram-webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}).status_code == 200


def restart() -> None:
    bootstrap.forget_process_state()
    redis_client.flushdb()


# --- collecting, one question at a time --------------------------------------------------------------------


def test_a_customer_books_step_by_step_and_a_manager_confirms_with_one_tap(api, salon, chatflow, telegram, llm):
    assert exchange(api, chatflow, "Здравствуйте, запишите на маникюр") == "На какой день и время вас записать?"
    assert exchange(api, chatflow, "завтра в 15") == "Как к вам обращаться — Айгуль?"
    submitted = exchange(api, chatflow, "да")
    when = texts.at_moment(tomorrow().replace(hour=15, minute=0))
    assert submitted == f"Спасибо! Передал заявку администратору: маникюр, {when}, Айгуль. Как только подтвердит — напишу вам."
    assert llm.chat_requests() == []  # every step was understood without the model
    b = booking()
    assert (b.status, b.service_name, b.customer_name) == (BookingStatus.REQUESTED, "Маникюр", "Айгуль")
    assert b.requested_at == tomorrow().replace(hour=15, minute=0, second=0, microsecond=0)

    shown = card(telegram)
    assert "Запись: ждёт подтверждения" in card_text(telegram) and "Маникюр — 8 000 тг, 60 мин" in shown.text and f"+{PHONE}" in shown.text
    assert shown.callback_data() == [f"bkconfirm_{b.id}", f"bkpropose_{b.id}", f"bkdecline_{b.id}"]
    assert all(len(data.encode()) <= 64 for data in shown.callback_data())

    assert press(api, telegram, ANNA, "bkconfirm")["show_alert"] is False
    assert (
        wait_until(lambda: sent(chatflow)[-1].startswith("Вы записаны"))
        and sent(chatflow)[-1] == f"Вы записаны на маникюр {when}. Ждём вас!"
    )
    assert (booking().status, booking().decided_by) == (BookingStatus.CONFIRMED, "Анна")
    wait_until(lambda: "Запись подтверждена · Анна" in card_text(telegram) and card(telegram).callback_data() == [], message="card done")


def test_everything_said_in_one_message_is_taken_at_once(api, salon, chatflow, telegram, llm):
    reply = exchange(api, chatflow, "Запишите меня завтра в 15 на маникюр, Айгерим")
    assert reply.startswith("Спасибо! Передал заявку администратору: маникюр, ") and reply.endswith(
        "Айгерим. Как только подтвердит — напишу вам."
    )
    assert booking().customer_name == "Айгерим" and llm.chat_requests() == []


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ("ертеңге жазылайын", ["маникюр", "сағат 3-те", "иә"]),  # Kazakh: tomorrow, at 3 (the salon's 15:00)
        ("zapishite pozhaluysta na manikur zavtra v 3", ["да"]),  # Russian in Latin letters
        ("можно на завтра к 15?", ["маникюр", "да"]),
    ],
)
def test_kazakh_and_latin_typed_requests_are_understood(api, salon, chatflow, telegram, first, then):
    exchange(api, chatflow, first)
    for text in then:
        exchange(api, chatflow, text)
    b = booking()
    assert b.status == BookingStatus.REQUESTED and b.service_name == "Маникюр"
    assert b.requested_at == tomorrow().replace(hour=15, minute=0, second=0, microsecond=0)


def test_a_restart_mid_collection_continues_where_it_was(api, salon, chatflow, telegram):
    assert exchange(api, chatflow, "Хочу записаться на педикюр") == "На какой день и время вас записать?"
    restart()
    assert exchange(api, chatflow, "завтра в 12:30") == "Как к вам обращаться — Айгуль?"
    restart()
    assert exchange(api, chatflow, "Нет, Динара").startswith("Как к вам обращаться")  # "нет": the WhatsApp name is not hers
    assert exchange(api, chatflow, "Динара").startswith("Спасибо! Передал заявку")
    assert (booking().customer_name, booking().service_name) == ("Динара", "Педикюр")


def test_a_question_mid_flow_is_answered_and_collection_resumes(api, salon, chatflow, telegram):
    exchange(api, chatflow, "Запишите на маникюр")
    assert exchange(api, chatflow, "а сколько стоит?") == "Маникюр — 8 000 тг, 60 мин\n\nНа какой день и время вас записать?"
    assert booking().status == BookingStatus.COLLECTING


@pytest.mark.parametrize("stop", ["отмена", "потом", "передумала", "кейін"])
def test_the_customer_stops_collection_politely_and_no_manager_is_called(api, salon, chatflow, telegram, stop):
    exchange(api, chatflow, "Запишите на маникюр")
    assert exchange(api, chatflow, stop) == "Хорошо, не записываю. Если передумаете — просто напишите."
    assert booking().status == BookingStatus.CANCELLED
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Handover)) == 0


def test_a_past_or_closed_time_is_asked_again(api, make_client, chatflow, telegram):
    day_after = (datetime.now(ALMATY) + timedelta(days=2)).weekday()
    make_client(
        "salon",
        telegram_chat_id=CHAT,
        telegram_bot_token="100001:test-bot-token",
        settings={"booking_enabled": True, "hours": {WEEKDAYS[day_after]: ["10:00-20:00"]}, "booking_required": ["time"]},
    )
    closed = exchange(api, chatflow, "Можно записаться завтра в 15:00?")
    assert " мы не работаем (график: " in closed and closed.endswith("Выберите, пожалуйста, другое время.")
    assert exchange(api, chatflow, "вчера в 12") == "Это время уже прошло. На какой день и время вас записать?"
    assert exchange(api, chatflow, "послезавтра в 12").startswith("Спасибо! Передал заявку администратору: ")
    at = booking().requested_at
    assert at is not None and at.astimezone(ALMATY).weekday() == day_after


def test_the_model_recognises_a_request_the_rules_do_not(api, salon, chatflow, telegram, llm):
    llm.set_reply(
        json.dumps({"reply": "", "handoff": "none", "reason": "", "booking": {"wants": True, "service": "стрижка", "when": "", "name": ""}})
    )
    assert exchange(api, chatflow, "Мне бы к мастеру Асель подстричься") == "На какой день и время вас записать?"
    assert booking().service_name == "Стрижка женская"
    schema = llm.chat_requests()[0]["response_format"]["json_schema"]["schema"]
    assert "booking" in schema["required"] and len(llm.chat_requests()) == 1  # one call answers and recognises


@pytest.mark.parametrize("text", ["у меня запись на завтра, во сколько приходить?", "я записана на 15:00, можно опоздать на 10 минут?"])
def test_a_customer_asking_about_a_booking_they_have_is_not_asked_to_book_again(api, salon, chatflow, telegram, llm, text):
    llm.set_reply(json.dumps({"reply": "Уточню у администратора.", "handoff": "none", "reason": "", "booking": None}))
    assert exchange(api, chatflow, text) == "Уточню у администратора."
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(BookingRequest)) == 0


def test_without_a_manager_group_no_booking_is_collected_nor_promised(api, make_client, chatflow, llm):
    make_client("salon", telegram_chat_id=None, settings={"booking_enabled": True})  # nobody could confirm it
    llm.set_reply(json.dumps({"reply": "Конечно, на какое время?", "handoff": "none", "reason": "", "booking": None}))
    assert exchange(api, chatflow, "Запишите меня завтра в 15 на маникюр, Айгерим") == "Конечно, на какое время?"
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(BookingRequest)) == 0


def test_bookings_off_the_bot_just_answers(api, make_client, chatflow, llm):
    make_client("salon")
    llm.set_reply("Конечно, на какое время?")
    assert exchange(api, chatflow, "Запишите на маникюр") == "Конечно, на какое время?"
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(BookingRequest)) == 0


# --- the manager decides ------------------------------------------------------------------------------------


def submitted(api, chatflow, telegram) -> None:
    exchange(api, chatflow, "Запишите меня завтра в 15 на маникюр, Айгерим")
    card(telegram)


def test_two_managers_pressing_at_once_exactly_one_decides(api, salon, chatflow, telegram):
    submitted(api, chatflow, telegram)
    b = booking()
    assert b.telegram_message_id is not None
    updates = [
        make_callback_update(next(_updates), CHAT, b.telegram_message_id, _topic(telegram), user, f"{action}_{b.id}")
        for user, action in ((ANNA, "bkconfirm"), (BOLAT, "bkdecline"))
    ]
    headers = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda u: api.post("/telegram-webhook", json=u, headers=headers).json(), updates))
    assert sorted(a["show_alert"] for a in answers) == [False, True]
    with session_scope() as session:
        winner = session.get(BookingRequest, b.id)
        assert winner is not None
    assert winner.status in (BookingStatus.CONFIRMED, BookingStatus.DECLINED)
    loser_text = next(a["text"] for a in answers if a["show_alert"])
    assert winner.decided_by is not None and winner.decided_by in loser_text
    wait_until(lambda: len(sent(chatflow)) == 2, message="one outcome to the customer")
    with session_scope() as session:
        told = session.scalar(select(func.count()).select_from(OutboxItem).where(OutboxItem.dedup_key.like("booking:%")))
    assert told == 1


def test_other_time_the_managers_next_message_is_the_proposal_and_the_customer_accepts_with_yes(api, salon, chatflow, telegram):
    submitted(api, chatflow, telegram)
    assert press(api, telegram, ANNA, "bkpropose")["text"] == "Напишите время в этой теме"
    wait_until(lambda: any("Анна, напишите в этой теме время" in (m.text or "") for m in telegram.messages(CHAT, _topic(telegram))))
    wait_until(lambda: "Анна пишет другое время" in card_text(telegram), message="the card says who proposes")

    manager_writes(api, telegram, ANNA, "послезавтра в 17:00")
    later = (datetime.now(ALMATY) + timedelta(days=2)).replace(hour=17, minute=0, second=0, microsecond=0)
    proposal = wait_until(lambda: sent(chatflow)[-1].startswith("Администратор предлагает") and sent(chatflow)[-1])
    assert texts.at_moment(later) in proposal
    wait_until(lambda: "ждём ответа" in card_text(telegram), message="the card waits for the customer")

    assert exchange(api, chatflow, "да") == f"Вы записаны на маникюр {texts.at_moment(later)}. Ждём вас!"
    b = booking()
    assert (b.status, b.requested_at, b.decided_by) == (BookingStatus.CONFIRMED, later, "Анна")
    wait_until(lambda: "Запись подтверждена · Анна" in card_text(telegram), message="the card confirmed")


def test_a_proposal_the_service_cannot_read_is_asked_again_in_the_topic(api, salon, chatflow, telegram):
    submitted(api, chatflow, telegram)
    press(api, telegram, ANNA, "bkpropose")
    manager_writes(api, telegram, ANNA, "давайте попозже")
    wait_until(lambda: any("Не понял время" in (m.text or "") for m in telegram.messages(CHAT, _topic(telegram))))
    assert len(sent(chatflow)) == 1  # nothing went to the customer


def test_declined_the_customer_is_told_and_their_next_time_goes_to_the_managers(api, salon, chatflow, telegram):
    submitted(api, chatflow, telegram)
    press(api, telegram, BOLAT, "bkdecline")
    declined = wait_until(lambda: sent(chatflow)[-1].startswith("К сожалению") and sent(chatflow)[-1])
    assert "записать не получается" in declined
    assert exchange(api, chatflow, "тогда послезавтра в 11").startswith("Спасибо! Передал заявку администратору: маникюр, ")
    assert booking().status == BookingStatus.REQUESTED and booking().customer_name == "Айгерим"


def test_moving_a_confirmed_booking_goes_to_a_manager_with_the_booking(api, salon, chatflow, telegram):
    submitted(api, chatflow, telegram)
    press(api, telegram, ANNA, "bkconfirm")
    wait_until(lambda: sent(chatflow)[-1].startswith("Вы записаны"))
    exchange(api, chatflow, "Можно перенести мою запись?")
    wait_until(
        lambda: any("📅 Запись клиента (подтверждена): Маникюр" in (m.text or "") for m in telegram.messages(CHAT, _topic(telegram)))
    )
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Handover)) == 1


def test_the_owner_lists_bookings(api, salon, chatflow, telegram, capsys):
    submitted(api, chatflow, telegram)
    capsys.readouterr()
    assert cli.main(["bookings", "list", "--client", "salon", "--status", "requested"]) == 0
    out = capsys.readouterr().out
    assert "Маникюр" in out and "Айгерим" in out and f"+{PHONE}" in out and "requested" in out
    assert cli.main(["bookings", "list", "--client", "salon", "--status", "confirmed"]) == 0
    assert "no bookings" in capsys.readouterr().out
