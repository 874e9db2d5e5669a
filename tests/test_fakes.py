"""The fakes driven by the real clients: the openai and elevenlabs SDKs, requests for ChatFlow and Telegram."""

import io
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest
import requests
from elevenlabs import ElevenLabs
from elevenlabs.core.api_error import ApiError
from elevenlabs.types import SpeechToTextChunkResponseModel

from fakes import (
    FakeChatFlow,
    FakeElevenLabs,
    FakeOpenAI,
    FakeTelegram,
    make_callback_update,
    make_message_update,
    make_user,
)
from fakes.telegram import NOT_MODIFIED

CHAT = -1001234567890
PHONE = "77010000001"
KEYBOARD = {"inline_keyboard": [[{"text": "Беру", "callback_data": "take:1"}, {"text": "Решено", "callback_data": "resolve:1"}]]}


@pytest.fixture(scope="module")
def _openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key="sk-test") as fake:
        yield fake


@pytest.fixture
def fake_openai(_openai_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    _openai_server.reset()
    yield _openai_server


@pytest.fixture
def llm(fake_openai: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="sk-test", base_url=fake_openai.base_url, max_retries=0, timeout=5) as client:
        yield client


@pytest.fixture(scope="module")
def _chatflow_server() -> Iterator[FakeChatFlow]:
    with FakeChatFlow() as fake:
        yield fake


@pytest.fixture
def chatflow(_chatflow_server: FakeChatFlow) -> Iterator[FakeChatFlow]:
    _chatflow_server.reset()
    _chatflow_server.tokens = None
    yield _chatflow_server


@pytest.fixture(scope="module")
def _telegram_server() -> Iterator[FakeTelegram]:
    with FakeTelegram(token="123:ABC") as fake:
        yield fake


@pytest.fixture
def telegram(_telegram_server: FakeTelegram) -> Iterator[FakeTelegram]:
    _telegram_server.reset()
    yield _telegram_server


@pytest.fixture(scope="module")
def _elevenlabs_server() -> Iterator[FakeElevenLabs]:
    with FakeElevenLabs(api_key="xi-test") as fake:
        yield fake


@pytest.fixture
def stt(_elevenlabs_server: FakeElevenLabs) -> FakeElevenLabs:
    _elevenlabs_server.reset()
    return _elevenlabs_server


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def _chat(client: openai.OpenAI, text: str = "Сколько стоит стрижка?", **kwargs: Any) -> str:
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "system", "content": "Ты помощник салона."}, {"role": "user", "content": text}], **kwargs
    )
    return completion.choices[0].message.content or ""


def _send_text(
    session: requests.Session, fake: FakeChatFlow, text: str, *, token: str = "cf-token", phone: str = PHONE
) -> requests.Response:
    params = {"token": token, "instance_id": "inst-1", "jid": f"{phone}@s.whatsapp.net", "msg": text}
    return session.get(fake.send_text_url, params=params, timeout=5)


class _Bot:
    """A minimal Bot API caller over requests, as the service's wrapper would call it."""

    def __init__(self, fake: FakeTelegram, session: requests.Session, token: str = "123:ABC") -> None:
        self.base = f"{fake.url}/bot{token}"
        self.session = session

    def __call__(self, method: str, **params: Any) -> Any:
        return self.session.post(f"{self.base}/{method}", json=params, timeout=5).json()

    def form(self, method: str, data: dict[str, str], files: dict[str, Any] | None = None) -> Any:
        return self.session.post(f"{self.base}/{method}", data=data, files=files, timeout=5).json()


@pytest.fixture
def bot(telegram: FakeTelegram, http: requests.Session) -> _Bot:
    return _Bot(telegram, http)


# --- the shared server machinery --------------------------------------------------------------------------
def test_records_requests_and_waits_for_answered_ones(chatflow: FakeChatFlow, http: requests.Session) -> None:
    threading.Timer(0.1, lambda: _send_text(requests, chatflow, "позже")).start()  # type: ignore[arg-type]
    _send_text(http, chatflow, "сразу")

    answered = chatflow.wait_for_count(2, timeout=3, path="/send-text")

    first = answered[0]
    assert (first.method, first.path, first.query["msg"]) == ("GET", "/api/v1/send-text", "сразу")
    assert first.status == 200 and "user-agent" in first.headers
    assert chatflow.wait_for(lambda: chatflow.sent_texts(PHONE) == ["сразу", "позже"], timeout=3)


def test_wait_for_fails_with_a_clear_message_on_timeout(chatflow: FakeChatFlow) -> None:
    with pytest.raises(AssertionError, match="3 answered requests"):
        chatflow.wait_for_count(3, timeout=0.2)


def test_faults_for_the_next_n_requests_then_normal(chatflow: FakeChatFlow, http: requests.Session) -> None:
    chatflow.fail(503, times=2)

    statuses = [_send_text(http, chatflow, f"m{i}").status_code for i in range(3)]

    assert statuses == [503, 503, 200]
    assert chatflow.sent_texts() == ["m2"]
    assert [r.fault for r in chatflow.requests] == ["status", "status", None]


def test_fault_always_until_cleared_and_only_on_matching_paths(chatflow: FakeChatFlow, http: requests.Session) -> None:
    chatflow.fail(500, times=None, path="/send-image")
    image = {"token": "t", "instance_id": "i", "jid": f"{PHONE}@s.whatsapp.net", "imageurl": chatflow.host_media("y.jpg", b"jpg")}

    assert [http.get(chatflow.url + "/api/v1/send-image", params=image, timeout=5).status_code for _ in range(3)] == [500] * 3
    assert _send_text(http, chatflow, "текст идёт").status_code == 200
    chatflow.clear_faults()
    assert http.get(chatflow.url + "/api/v1/send-image", params=image, timeout=5).status_code == 200


def test_delay_drop_and_garbage_faults(chatflow: FakeChatFlow, http: requests.Session) -> None:
    chatflow.delay(1.0)
    with pytest.raises(requests.Timeout):
        http.get(chatflow.send_text_url, params={"msg": "x"}, timeout=0.2)
    chatflow.drop()
    with pytest.raises(requests.ConnectionError):
        _send_text(http, chatflow, "x")
    chatflow.garbage()
    garbage = _send_text(http, chatflow, "x")
    with pytest.raises(ValueError):
        garbage.json()
    assert _send_text(http, chatflow, "ok").json()["success"] is True


def test_fixed_latency_and_hundreds_of_concurrent_requests() -> None:
    with FakeChatFlow(latency=0.3) as fake:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=300) as pool:
            codes = list(pool.map(lambda i: _send_text(requests, fake, f"m{i}", phone=f"7701{i:07d}").status_code, range(300)))  # type: ignore[arg-type]
        elapsed = time.monotonic() - started

    assert codes == [200] * 300
    assert len(fake.sent()) == 300
    assert 0.3 <= elapsed < 6, elapsed


def test_stop_is_prompt_while_a_handler_sleeps() -> None:
    fake = FakeChatFlow().start()
    fake.delay(30)
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(requests.get(fake.send_text_url, timeout=60).status_code)
        except requests.ConnectionError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    fake.wait_for(lambda: fake.requests, timeout=2)

    started = time.monotonic()
    fake.stop()

    assert time.monotonic() - started < 2
    caller.join(timeout=2)
    assert len(outcome) == 1 and isinstance(outcome[0], requests.ConnectionError)  # the waiting client is hung up on
    with pytest.raises(requests.ConnectionError):
        requests.get(fake.send_text_url, timeout=1)


# --- OpenAI ------------------------------------------------------------------------------------------------
def test_openai_default_reply_quotes_the_last_user_message(llm: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    completion = llm.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "user", "content": "первый"},
            {"role": "assistant", "content": "..."},
            {"role": "user", "content": "Сәлем, бағасы?"},
        ],
    )

    assert completion.choices[0].message.content == "Ответ: Сәлем, бағасы?"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o-mini" and completion.usage and completion.usage.total_tokens > 0
    assert fake_openai.chat_requests()[0]["messages"][-1]["content"] == "Сәлем, бағасы?"


def test_openai_scripted_then_fixed_then_callable_replies(llm: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.set_reply("Всегда так")
    fake_openai.script("раз", "два")
    assert [_chat(llm) for _ in range(3)] == ["раз", "два", "Всегда так"]

    fake_openai.set_reply(lambda body: f"{len(body['messages'])} сообщения, max_tokens={body.get('max_tokens')}")
    assert _chat(llm, max_tokens=50) == "2 сообщения, max_tokens=50"

    fake_openai.reset()
    assert _chat(llm, "снова") == "Ответ: снова"


def test_openai_json_mode_request_is_recorded_and_reply_parses(llm: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.set_reply('{"intent": "human_request", "confidence": 0.9}')

    content = _chat(llm, "позовите менеджера", response_format={"type": "json_object"})

    assert json.loads(content)["intent"] == "human_request"
    assert fake_openai.chat_requests()[-1]["response_format"] == {"type": "json_object"}


def test_openai_structured_output_follows_the_json_schema_and_a_bad_schema_is_refused(llm: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    from app.services.conversation.assistant import ANSWER_SCHEMA

    structured = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": ANSWER_SCHEMA}}
    fake_openai.set_reply("Маникюр стоит 8 000 тг.")
    assert json.loads(_chat(llm, response_format=structured)) == {"reply": "Маникюр стоит 8 000 тг.", "handoff": "none", "reason": ""}
    fake_openai.set_reply('{"reply": "…", "handoff": "sensitive", "reason": "оплата"}')  # a judgement, as programmed
    assert json.loads(_chat(llm, response_format=structured))["handoff"] == "sensitive"

    loose = {**ANSWER_SCHEMA, "additionalProperties": True}
    with pytest.raises(openai.BadRequestError, match="additionalProperties"):
        _chat(llm, response_format={"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": loose}})


def test_openai_errors_surface_as_the_sdk_exceptions(llm: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    fake_openai.rate_limit(retry_after=7)
    with pytest.raises(openai.RateLimitError) as rate_limited:
        _chat(llm)
    assert rate_limited.value.response.headers["retry-after"] == "7"
    assert rate_limited.value.code == "rate_limit_exceeded"

    fake_openai.server_error(500)
    with pytest.raises(openai.InternalServerError):
        _chat(llm)
    fake_openai.server_error(503)
    with pytest.raises(openai.InternalServerError) as unavailable:
        _chat(llm)
    assert unavailable.value.status_code == 503

    fake_openai.delay(1.0)
    with pytest.raises(openai.APITimeoutError):
        llm.with_options(timeout=0.2).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])

    fake_openai.drop()
    with pytest.raises(openai.APIConnectionError):
        _chat(llm)
    assert _chat(llm, "работает") == "Ответ: работает"


def test_openai_rejects_a_wrong_key(fake_openai: FakeOpenAI) -> None:
    with (
        openai.OpenAI(api_key="sk-wrong", base_url=fake_openai.base_url, max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        _chat(client)


def test_openai_embeddings_are_deterministic_unit_vectors(llm: openai.OpenAI, fake_openai: FakeOpenAI) -> None:
    batch = llm.embeddings.create(model="text-embedding-3-small", input=["стрижка цена", "цена стрижки мужской", "доставка пиццы"])
    single = llm.embeddings.create(model="text-embedding-3-small", input="стрижка цена", encoding_format="float")

    vectors = [item.embedding for item in batch.data]
    assert [item.index for item in batch.data] == [0, 1, 2]
    assert all(len(v) == 1536 for v in vectors)
    assert abs(sum(x * x for x in vectors[0]) - 1) < 1e-5
    assert single.data[0].embedding == pytest.approx(vectors[0], abs=1e-6)  # base64 (SDK default) and float agree

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])  # shared words pull texts together
    assert fake_openai.embedding_requests()[0]["input"] == ["стрижка цена", "цена стрижки мужской", "доставка пиццы"]


def test_openai_embedding_dimensions_parameter(llm: openai.OpenAI) -> None:
    result = llm.embeddings.create(model="text-embedding-3-small", input="кофе", dimensions=256)

    assert len(result.data[0].embedding) == 256
    assert result.usage.total_tokens > 0


# --- ChatFlow ----------------------------------------------------------------------------------------------
def test_chatflow_send_text_answers_like_the_gateway(chatflow: FakeChatFlow, http: requests.Session) -> None:
    body = _send_text(http, chatflow, "Здравствуйте! Запись на 15:00 & до встречи").json()

    assert body["success"] is True and body["message"] == "Message sent"
    assert body["data"]["messageId"] == chatflow.sent()[0].message_id
    _send_text(http, chatflow, "другому", phone="77020000002")
    assert chatflow.sent_texts() == ["Здравствуйте! Запись на 15:00 & до встречи", "другому"]
    assert chatflow.sent_texts(f"{PHONE}@s.whatsapp.net") == ["Здравствуйте! Запись на 15:00 & до встречи"]


def test_chatflow_media_endpoints_download_the_url_they_are_given(chatflow: FakeChatFlow, http: requests.Session) -> None:
    base = {"token": "t", "instance_id": "i", "jid": f"{PHONE}@s.whatsapp.net"}
    endpoints = (("send-image", "imageurl"), ("send-audio", "audiourl"), ("send-doc", "docurl"), ("send-video", "videourl"))
    for endpoint, param in endpoints:
        url = chatflow.host_media(param, param.encode(), "application/octet-stream")
        reply = http.get(f"{chatflow.url}/api/v1/{endpoint}", params={**base, param: url, "caption": "прайс"}, timeout=5)
        assert reply.json()["success"] is True

    assert [(m.kind, m.media, m.text) for m in chatflow.sent(PHONE)] == [
        ("image", b"imageurl", "прайс"),
        ("audio", b"audiourl", "прайс"),
        ("document", b"docurl", "прайс"),
        ("video", b"videourl", "прайс"),
    ]
    assert chatflow.sent_texts() == []
    gone = http.get(f"{chatflow.url}/api/v1/send-image", params={**base, "imageurl": f"{chatflow.url}/media/nothing"}, timeout=5).json()
    assert gone == {"success": False, "message": "Failed to download media: HTTP 404"}
    assert len(chatflow.sent(PHONE)) == 4


def test_chatflow_refusal_and_invalid_token_are_200_with_success_false(chatflow: FakeChatFlow, http: requests.Session) -> None:
    chatflow.refuse("Instance is not connected")
    refused = _send_text(http, chatflow, "первое")
    assert (refused.status_code, refused.json()) == (200, {"success": False, "message": "Instance is not connected"})

    chatflow.tokens = {"good"}
    invalid = _send_text(http, chatflow, "второе", token="bad")
    assert (invalid.status_code, invalid.json()) == (200, {"success": False, "message": "Invalid token"})

    assert _send_text(http, chatflow, "третье", token="good").json()["success"] is True
    assert chatflow.sent_texts() == ["третье"]


def test_chatflow_rejects_missing_parameters_and_bad_jids(chatflow: FakeChatFlow, http: requests.Session) -> None:
    missing = http.get(chatflow.send_text_url, params={"token": "t", "jid": f"{PHONE}@s.whatsapp.net"}, timeout=5)
    bad_jid = http.get(chatflow.send_text_url, params={"token": "t", "instance_id": "i", "jid": "+7 701", "msg": "x"}, timeout=5)

    assert missing.status_code == 400 and "instance_id" in missing.json()["message"]
    assert bad_jid.status_code == 400 and bad_jid.json()["success"] is False
    assert chatflow.sent() == []


def test_chatflow_hosts_media_for_webhook_payloads(chatflow: FakeChatFlow, http: requests.Session) -> None:
    url = chatflow.host_media("voice.ogg", b"OggS\x00voice", "audio/ogg")

    reply = http.get(url, timeout=5)

    assert reply.content == b"OggS\x00voice" and reply.headers["Content-Type"] == "audio/ogg"
    assert http.get(chatflow.url + "/media/missing.ogg", timeout=5).status_code == 404


# --- Telegram ----------------------------------------------------------------------------------------------
def test_telegram_identity_chat_and_admin_rights(bot: _Bot, telegram: FakeTelegram) -> None:
    me = bot("getMe")
    chat = bot("getChat", chat_id=CHAT)["result"]
    member = bot("getChatMember", chat_id=CHAT, user_id=me["result"]["id"])["result"]

    assert me["ok"] is True and me["result"]["is_bot"] is True
    assert (chat["type"], chat["is_forum"]) == ("supergroup", True)
    assert member["status"] == "administrator" and member["can_manage_topics"] and member["can_pin_messages"]
    assert bot.session.post(f"{telegram.url}/botWRONG/getMe", timeout=5).json() == {
        "ok": False,
        "error_code": 401,
        "description": "Unauthorized",
    }
    assert bot("noSuchMethod") == {"ok": False, "error_code": 404, "description": "Not Found"}


def test_telegram_missing_rights_are_configurable(http: requests.Session) -> None:
    with FakeTelegram(bot_rights={"can_manage_topics": False}) as fake:
        caller = _Bot(fake, http)
        member = caller("getChatMember", chat_id=CHAT, user_id=fake.bot_user["id"])["result"]
        created = caller("createForumTopic", chat_id=CHAT, name="Айгуль")

    assert member["can_manage_topics"] is False
    assert created["error_code"] == 400 and "not enough rights" in created["description"]


def test_telegram_topics_and_messages_keep_state(bot: _Bot, telegram: FakeTelegram) -> None:
    topic = bot("createForumTopic", chat_id=CHAT, name="Айгуль +77010000001")["result"]
    thread = topic["message_thread_id"]
    sent = bot("sendMessage", chat_id=CHAT, message_thread_id=thread, text="Клиент просит менеджера", reply_markup=KEYBOARD)["result"]
    bot("sendMessage", chat_id=CHAT, text="в General")

    assert topic["name"] == "Айгуль +77010000001"
    assert (sent["message_thread_id"], sent["is_topic_message"], sent["chat"]["id"]) == (thread, True, CHAT)
    assert sent["reply_markup"] == KEYBOARD
    assert [t.name for t in telegram.topics(CHAT)] == ["Айгуль +77010000001"]
    in_topic = telegram.messages(CHAT, thread)
    assert [m.text for m in in_topic] == ["Клиент просит менеджера"]
    assert in_topic[0].callback_data() == ["take:1", "resolve:1"]
    assert len(telegram.messages(CHAT)) == 2


def test_telegram_form_encoded_and_multipart_calls(bot: _Bot, telegram: FakeTelegram) -> None:
    thread = telegram.create_topic(CHAT, "Клиент")
    form = bot.form(
        "sendMessage", {"chat_id": str(CHAT), "message_thread_id": str(thread), "text": "форма", "reply_markup": json.dumps(KEYBOARD)}
    )
    audio = bytes(range(256)) * 4
    doc = bot.form(
        "sendDocument",
        {"chat_id": str(CHAT), "message_thread_id": str(thread), "caption": "голосовое клиента"},
        files={"document": ("voice.ogg", audio, "audio/ogg")},
    )

    assert form["ok"] and form["result"]["reply_markup"] == KEYBOARD
    assert doc["result"]["document"]["file_name"] == "voice.ogg" and doc["result"]["caption"] == "голосовое клиента"
    stored = telegram.messages(CHAT, thread)[-1]
    assert stored.kind == "document" and stored.file is not None and stored.file.data == audio  # binary-safe upload
    for method, field in (("sendPhoto", "photo"), ("sendVoice", "voice"), ("sendAudio", "audio")):
        assert bot.form(method, {"chat_id": str(CHAT)}, files={field: ("f", b"\x00\x01", "application/octet-stream")})["ok"]
    assert bot("sendDocument", chat_id=CHAT)["description"] == "Bad Request: there is no document in the request"


def test_telegram_edits_answer_not_modified_like_the_real_api(bot: _Bot, telegram: FakeTelegram) -> None:
    message_id = bot("sendMessage", chat_id=CHAT, text="Заявка", reply_markup=KEYBOARD)["result"]["message_id"]

    same = bot("editMessageText", chat_id=CHAT, message_id=message_id, text="Заявка", reply_markup=KEYBOARD)
    assert same == {"ok": False, "error_code": 400, "description": NOT_MODIFIED}
    assert bot("editMessageReplyMarkup", chat_id=CHAT, message_id=message_id, reply_markup=KEYBOARD)["description"] == NOT_MODIFIED

    taken = {"inline_keyboard": [[{"text": "Решено", "callback_data": "resolve:1"}]]}
    assert bot("editMessageReplyMarkup", chat_id=CHAT, message_id=message_id, reply_markup=taken)["ok"]
    edited = bot("editMessageText", chat_id=CHAT, message_id=message_id, text="Заявка (взял Иван)", reply_markup=taken)["result"]
    assert edited["text"] == "Заявка (взял Иван)" and "edit_date" in edited
    # Editing the text without reply_markup removes the keyboard, as Telegram does.
    bot("editMessageText", chat_id=CHAT, message_id=message_id, text="Заявка закрыта")
    assert telegram.message(CHAT, message_id).reply_markup is None  # type: ignore[union-attr]
    missing = bot("editMessageText", chat_id=CHAT, message_id=999999, text="x")
    assert missing["description"] == "Bad Request: message to edit not found"


def test_telegram_pins(bot: _Bot, telegram: FakeTelegram) -> None:
    thread = telegram.create_topic(CHAT, "Клиент")
    first = bot("sendMessage", chat_id=CHAT, message_thread_id=thread, text="карточка")["result"]["message_id"]
    general = bot("sendMessage", chat_id=CHAT, text="общее")["result"]["message_id"]

    assert bot("pinChatMessage", chat_id=CHAT, message_id=first)["result"] is True
    bot("pinChatMessage", chat_id=CHAT, message_id=general)
    assert telegram.pinned(CHAT) == [first, general]
    bot("unpinAllForumTopicMessages", chat_id=CHAT, message_thread_id=thread)
    assert telegram.pinned(CHAT) == [general]
    bot("unpinChatMessage", chat_id=CHAT, message_id=general)
    assert telegram.pinned(CHAT) == []
    assert bot("pinChatMessage", chat_id=CHAT, message_id=424242)["description"] == "Bad Request: message to pin not found"


def test_telegram_topic_lifecycle_and_deleted_threads(bot: _Bot, telegram: FakeTelegram) -> None:
    thread = bot("createForumTopic", chat_id=CHAT, name="Клиент")["result"]["message_thread_id"]
    card = bot("sendMessage", chat_id=CHAT, message_thread_id=thread, text="Заявка", reply_markup=KEYBOARD)["result"]["message_id"]

    assert bot("editForumTopic", chat_id=CHAT, message_thread_id=thread, name="Клиент [закрыт]")["result"] is True
    assert bot("closeForumTopic", chat_id=CHAT, message_thread_id=thread)["result"] is True
    assert bot("closeForumTopic", chat_id=CHAT, message_thread_id=thread)["description"] == "Bad Request: TOPIC_NOT_MODIFIED"
    assert telegram.topics(CHAT)[0].closed is True and telegram.topics(CHAT)[0].name == "Клиент [закрыт]"
    assert bot("reopenForumTopic", chat_id=CHAT, message_thread_id=thread)["result"] is True

    telegram.delete_topic(CHAT, thread)  # a manager deleted it in the app
    lost = bot("sendMessage", chat_id=CHAT, message_thread_id=thread, text="в удалённую тему")
    assert lost == {"ok": False, "error_code": 400, "description": "Bad Request: message thread not found"}
    assert bot("sendMessage", chat_id=CHAT, message_thread_id=987654, text="x")["description"] == "Bad Request: message thread not found"
    # The topic's messages went with it: an edit (which names no thread) finds no message, as on the real API.
    gone = {"ok": False, "error_code": 400, "description": "Bad Request: message to edit not found"}
    assert bot("editMessageText", chat_id=CHAT, message_id=card, text="Заявка (взял Иван)") == gone
    assert bot("editMessageReplyMarkup", chat_id=CHAT, message_id=card, reply_markup={"inline_keyboard": []}) == gone

    other = telegram.create_topic(CHAT, "Другой")
    assert bot("deleteForumTopic", chat_id=CHAT, message_thread_id=other)["result"] is True
    assert telegram.topics(CHAT) == []


def test_telegram_validates_like_the_real_api(bot: _Bot) -> None:
    long_data = {"inline_keyboard": [[{"text": "x", "callback_data": "x" * 65}]]}

    assert bot("sendMessage", chat_id=CHAT, text="я" * 4097)["description"] == "Bad Request: message is too long"
    assert bot("sendMessage", chat_id=CHAT, text="я" * 4096)["ok"]
    assert bot("sendMessage", chat_id=CHAT, text="")["description"] == "Bad Request: message text is empty"
    assert bot("sendMessage", chat_id=CHAT, text="x", reply_markup=long_data)["description"] == "Bad Request: BUTTON_DATA_INVALID"
    assert "can't parse entities" in bot("sendMessage", chat_id=CHAT, text="цена < 5000", parse_mode="HTML")["description"]
    assert bot("sendMessage", chat_id=CHAT, text="<b>цена</b> &lt; 5000", parse_mode="HTML")["ok"]
    assert "reserved" in bot("sendMessage", chat_id=CHAT, text="Цена 5000.", parse_mode="MarkdownV2")["description"]


def test_telegram_callback_answers_and_webhook(bot: _Bot, telegram: FakeTelegram) -> None:
    bot("answerCallbackQuery", callback_query_id="42", text="Вы взяли заявку", show_alert=True)
    bot.form("answerCallbackQuery", {"callback_query_id": "43"})
    bot("setWebhook", url="https://truffles.example/telegram-webhook", secret_token="s3cret", allowed_updates=["message", "callback_query"])

    assert [(a["callback_query_id"], a["text"], a["show_alert"]) for a in telegram.callback_answers()] == [
        ("42", "Вы взяли заявку", True),
        ("43", None, False),
    ]
    assert telegram.webhook()["secret_token"] == "s3cret"
    info = bot("getWebhookInfo")["result"]
    assert info["url"] == "https://truffles.example/telegram-webhook" and info["allowed_updates"] == ["message", "callback_query"]
    assert bot("deleteWebhook")["result"] is True and telegram.webhook()["url"] == ""


def test_telegram_rate_limit_and_kicked_bot(bot: _Bot, telegram: FakeTelegram) -> None:
    telegram.rate_limit(retry_after=5, method="sendMessage")
    limited = bot.session.post(f"{bot.base}/sendMessage", json={"chat_id": CHAT, "text": "x"}, timeout=5)

    assert limited.status_code == 429
    assert limited.json()["parameters"] == {"retry_after": 5} and limited.headers["Retry-After"] == "5"
    assert bot("sendMessage", chat_id=CHAT, text="x")["ok"]

    telegram.kick_bot(CHAT)
    kicked = bot("sendMessage", chat_id=CHAT, text="x")
    assert kicked == {"ok": False, "error_code": 403, "description": "Forbidden: bot was kicked from the supergroup chat"}
    assert bot("getMe")["ok"]
    assert len(telegram.calls("sendMessage")) == 3


def test_telegram_update_builders_use_real_field_names() -> None:
    manager = make_user(555, "Иван", last_name="Петров", username="ivan")
    callback = make_callback_update(1001, CHAT, 77, 12, manager, "take:1", reply_markup=KEYBOARD)
    text = make_message_update(1002, CHAT, 12, 555, "Здравствуйте, я менеджер")

    query = callback["callback_query"]
    assert callback["update_id"] == 1001 and query["data"] == "take:1" and isinstance(query["id"], str)
    assert query["from"] == {
        "id": 555,
        "is_bot": False,
        "first_name": "Иван",
        "last_name": "Петров",
        "username": "ivan",
        "language_code": "ru",
    }
    assert query["message"]["message_id"] == 77 and query["message"]["message_thread_id"] == 12
    assert query["message"]["chat"] == {"id": CHAT, "title": "Truffles managers", "is_forum": True, "type": "supergroup"}
    message = text["message"]
    assert (message["from"]["id"], message["message_thread_id"], message["is_topic_message"]) == (555, 12, True)
    assert message["text"] == "Здравствуйте, я менеджер" and message["chat"]["type"] == "supergroup"
    assert "message_thread_id" not in make_message_update(1003, CHAT, None, 555, "в General")["message"]


# --- ElevenLabs --------------------------------------------------------------------------------------------
def _transcribe(fake: FakeElevenLabs, audio: bytes = b"OggS\x00\x01binary", api_key: str = "xi-test") -> str:
    client = ElevenLabs(api_key=api_key, base_url=fake.url, timeout=5)
    result = client.speech_to_text.convert(file=("voice.ogg", audio, "audio/ogg"), model_id="scribe_v1", request_options={"max_retries": 0})
    assert isinstance(result, SpeechToTextChunkResponseModel)
    return result.text


def test_elevenlabs_transcribes_with_the_real_sdk(stt: FakeElevenLabs) -> None:
    stt.set_transcript("Сәлеметсіз бе, бағасы қанша?")
    client = ElevenLabs(api_key="xi-test", base_url=stt.url, timeout=5)

    result = client.speech_to_text.convert(
        file=("voice.ogg", b"OggS\x00\xff", "audio/ogg"), model_id="scribe_v1", language_code="kaz", request_options={"max_retries": 0}
    )

    assert isinstance(result, SpeechToTextChunkResponseModel)
    assert result.text == "Сәлеметсіз бе, бағасы қанша?"
    assert result.language_code == "kaz" and 0 < result.language_probability <= 1
    assert [w.text for w in result.words if w.type == "word"] == ["Сәлеметсіз", "бе,", "бағасы", "қанша?"]
    done = stt.transcriptions()[0]
    assert (done.model_id, done.language_code, done.file_name, done.audio) == ("scribe_v1", "kaz", "voice.ogg", b"OggS\x00\xff")
    assert stt.requests[0].headers["xi-api-key"] == "xi-test"


def test_elevenlabs_programmable_transcripts(stt: FakeElevenLabs) -> None:
    assert _transcribe(stt, "хочу записаться".encode()) == "хочу записаться"  # default: UTF-8 audio "says" itself
    stt.script("первое", "второе")
    assert [_transcribe(stt), _transcribe(stt)] == ["первое", "второе"]
    stt.set_transcript(lambda audio, form: f"{len(audio)} байт, {form['model_id']}")
    assert _transcribe(stt, b"12345") == "5 байт, scribe_v1"


def test_elevenlabs_wrong_key_and_faults(stt: FakeElevenLabs) -> None:
    with pytest.raises(ApiError) as unauthorized:
        _transcribe(stt, api_key="wrong")
    assert unauthorized.value.status_code == 401 and unauthorized.value.body["detail"]["status"] == "invalid_api_key"

    stt.server_error(503)
    with pytest.raises(ApiError) as unavailable:
        _transcribe(stt)
    assert unavailable.value.status_code == 503
    assert stt.received_model_ids() == ["scribe_v1", "scribe_v1"]  # recorded even for refused and failed requests


def test_elevenlabs_shows_the_sdk_retry_dropping_form_fields(stt: FakeElevenLabs) -> None:
    # Why the service disables the SDK's retries: its retry re-sends the file without model_id.
    stt.server_error(500)
    client = ElevenLabs(api_key="xi-test", base_url=stt.url, timeout=5)

    with pytest.raises(ApiError):
        client.speech_to_text.convert(file=io.BytesIO(b"audio"), model_id="scribe_v1", request_options={"max_retries": 1})

    assert stt.received_model_ids() == ["scribe_v1", None]
    assert [r.status for r in stt.requests] == [500, 422]


def test_telegram_get_file_and_download_like_the_real_api(bot: _Bot, telegram: FakeTelegram) -> None:
    doc = telegram.add_file("document", b"%PDF-1.4 price list", mime_type="application/pdf", file_name="prices.pdf")
    info = bot("getFile", file_id=doc["file_id"])["result"]
    assert info["file_size"] == len(b"%PDF-1.4 price list") and info["file_path"].endswith(".pdf")
    assert bot.session.get(f"{telegram.url}/file/bot123:ABC/{info['file_path']}", timeout=5).content == b"%PDF-1.4 price list"
    assert bot.session.get(f"{telegram.url}/file/botWRONG/{info['file_path']}", timeout=5).status_code == 401
    assert bot("getFile", file_id="nope") == {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"}
    huge = telegram.add_file("video", b"", size=21 * 1024 * 1024)
    assert bot("getFile", file_id=huge["file_id"])["description"] == "Bad Request: file is too big"
    photo = telegram.add_file("photo", b"\xff\xd8 jpeg")
    assert len(photo) == 2 and photo[1]["width"] == 1280  # sizes, the largest last
