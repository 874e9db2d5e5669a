"""Finding 4: a customer could break what managers see. Text was escaped and then cut (by characters, while
Telegram counts the visible text in UTF-16 units), so a card or a forward could be refused with a 400 that is
never retried, or reach the manager with cut entities ("amp;") in it. Now text is cut before it is escaped,
to Telegram's own measure, and a markup Telegram refuses is sent again as plain text."""

import base64
import re

import pytest

from tests.helpers import chatflow_payload, wait_until
from tests.security.helpers import CHAT, PHONE, say, visible


@pytest.fixture
def salon(make_client, llm, chatflow, telegram):
    return make_client("salon", telegram_chat_id=CHAT, telegram_bot_token="100001:test-bot-token")


def _card(telegram):
    [pinned] = wait_until(lambda: telegram.pinned(CHAT), message="the pinned card")
    return telegram.message(CHAT, pinned)


def test_a_card_over_long_emoji_messages_appears_with_its_buttons(api, salon, telegram):
    # Each line of the card is cut to 400 characters: 400 emoji are 800 units as Telegram counts them.
    for _ in range(6):
        say(api, "Менеджер! " + "😀" * 500)
    card = _card(telegram)
    assert len(card.callback_data()) == 4
    assert "Нужен менеджер" in card.text and "Менеджер! 😀😀" in card.text


def _forwarded_words(telegram, topic_messages_before: int) -> str:
    texts = [visible(m.text) for m in telegram.messages(CHAT) if m.kind == "text"][topic_messages_before:]
    joined = "".join(texts)
    return re.sub(r"\s", "", joined.split("👤 Айгуль:", 1)[-1])


@pytest.mark.parametrize("words", ["&" * 5000, "😀" * 3000, "<b>" * 2000 + "</i>"], ids=["ampersands", "emoji", "markup"])
def test_a_long_forward_reaches_the_manager_whole_and_unbroken(api, salon, telegram, words):
    say(api, "Позовите менеджера")
    _card(telegram)
    before = len([m for m in telegram.messages(CHAT) if m.kind == "text"])
    say(api, words)
    wait_until(lambda: _forwarded_words(telegram, before) == words, timeout=15, message="the customer's words, whole, in the topic")


def test_a_long_caption_arrives_with_the_file(api, salon, telegram):
    say(api, "Позовите менеджера")
    _card(telegram)
    media = {"base64": base64.b64encode(b"\xff\xd8\xff photo").decode(), "mimetype": "image/jpeg", "caption": "😀" * 1000 + " & <b>"}
    assert api.post("/webhook/salon", json=chatflow_payload("", phone=PHONE, messageType="image", mediaData=media)).status_code == 200
    [photo] = wait_until(lambda: [m for m in telegram.messages(CHAT) if m.kind == "photo"], message="the photo in the topic")
    assert photo.caption.startswith("😀" * 500)


def test_markup_telegram_refuses_is_sent_again_as_plain_text(api, salon, telegram):
    refused = {
        "ok": False,
        "error_code": 400,
        "description": 'Bad Request: can\'t parse entities: Unsupported start tag "x" at byte offset 0',
    }
    telegram.fail(400, refused, times=1, path="/sendMessage")
    say(api, "Позовите менеджера")
    card = _card(telegram)
    assert card.parse_mode is None and "Нужен менеджер" in card.text and "<b>" not in card.text
    assert len(card.callback_data()) == 4
