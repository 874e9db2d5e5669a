"""Finding 7: one shared Telegram secret for every bot, routing by chat id alone (first match), inactive
clients still served and any member of the group acting as a manager. Now each bot has its own webhook
path and secret, a (bot, chat) pair names one client, inactive clients are ignored, and a client may list
who its managers are."""

import itertools

import pytest
from sqlalchemy import select

from app import cli
from app.db import session_scope
from app.models import Handover, HandoverStatus
from app.services import clients
from app.utils.errors import BadRequest
from fakes.telegram import make_callback_update, make_message_update, make_user
from tests.conftest import TELEGRAM_SECRET
from tests.helpers import wait_until
from tests.security.helpers import CHAT, PHONE, say

BOT_TOKEN = "100001:test-bot-token"
_updates = itertools.count(5000)


@pytest.fixture
def salon(make_client, llm, chatflow, telegram):
    return make_client("salon", telegram_chat_id=CHAT, telegram_bot_token=BOT_TOKEN)


def _set_webhook(telegram) -> str:
    assert cli.main(["telegram", "set-webhook", "--client", "salon", "--url", "https://bot.example"]) == 0
    return str(telegram.webhook()["secret_token"])


def _pending(api, telegram):
    say(api, "Позовите менеджера")
    [card_id] = wait_until(lambda: telegram.pinned(CHAT), message="the pinned card")
    with session_scope() as session:
        handover = session.scalar(select(Handover))
        assert handover is not None
        return handover.id, card_id


def _press(api, path, secret, card_id, user, data):
    update = make_callback_update(next(_updates), CHAT, card_id, None, user, data)
    return api.post(path, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": secret})


def _status() -> HandoverStatus:
    with session_scope() as session:
        handover = session.scalar(select(Handover))
        assert handover is not None
        return HandoverStatus(handover.status)


def test_each_bot_has_its_own_path_and_secret(api, salon, telegram):
    secret = _set_webhook(telegram)
    handover_id, card_id = _pending(api, telegram)
    anna = make_user(501, "Анна")
    assert _press(api, "/telegram-webhook/100001", TELEGRAM_SECRET, card_id, anna, f"take_{handover_id}").status_code == 401
    assert _press(api, "/telegram-webhook/100002", secret, card_id, anna, f"take_{handover_id}").status_code == 401
    assert _status() == HandoverStatus.PENDING
    assert _press(api, "/telegram-webhook/100001", secret, card_id, anna, f"take_{handover_id}").status_code == 200
    assert _status() == HandoverStatus.ACTIVE


def test_a_bot_and_chat_name_one_client(make_client):
    make_client("salon", telegram_chat_id=CHAT, telegram_bot_token=BOT_TOKEN)
    with pytest.raises(BadRequest):
        make_client("other", telegram_chat_id=CHAT, telegram_bot_token="100001:another-token-same-bot")
    make_client("third", telegram_chat_id=CHAT, telegram_bot_token="100009:a-different-bot")  # another bot: fine


def test_an_inactive_clients_group_is_ignored(api, salon, telegram):
    handover_id, card_id = _pending(api, telegram)
    with session_scope() as session:
        clients.update(session, slug="salon", is_active=False)
    answer = _press(api, "/telegram-webhook", TELEGRAM_SECRET, card_id, make_user(501, "Анна"), f"take_{handover_id}").json()
    assert answer["text"] == "Этот чат не подключён"
    assert _status() == HandoverStatus.PENDING


def test_only_listed_managers_press_buttons_and_reply(api, make_client, llm, chatflow, telegram):
    make_client("salon", telegram_chat_id=CHAT, telegram_bot_token=BOT_TOKEN, settings={"managers": ["501", "@Bolat"]})
    handover_id, card_id = _pending(api, telegram)
    stranger, bolat = make_user(777, "Прохожий", username="passerby"), make_user(502, "Болат", username="bolat")
    answer = _press(api, "/telegram-webhook", TELEGRAM_SECRET, card_id, stranger, f"take_{handover_id}").json()
    assert answer["show_alert"] is True and "Нет доступа" in answer["text"]
    assert _status() == HandoverStatus.PENDING
    topic = telegram.topics(CHAT)[0].message_thread_id
    update = make_message_update(next(_updates), CHAT, topic, stranger, "Я не менеджер, но отвечу")
    assert api.post("/telegram-webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}).status_code == 200
    assert _status() == HandoverStatus.PENDING  # not taken by a reply either
    assert _press(api, "/telegram-webhook", TELEGRAM_SECRET, card_id, bolat, f"take_{handover_id}").status_code == 200
    assert _status() == HandoverStatus.ACTIVE
    assert chatflow.sent_texts(PHONE) == [chatflow.sent_texts(PHONE)[0]]  # the stranger's words never reached the customer
