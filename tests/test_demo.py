"""The demo a new user tries first (issue #17): the demo salon's knowledge, the fake model answering from it,
and `simulate` showing both sides — the customer's replies and what the managers' group shows."""

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from app import cli
from app.cli_demo import DEMO_CHAT_ID, DEMO_KNOWLEDGE
from app.config import settings
from app.services.handover import reminders
from app.services.knowledge import kb
from fakes import grounded_reply
from fakes.openai_api import NOT_IN_PASSAGES
from tests.helpers import chatflow_payload, wait_until
from tests.test_handover_clocks import deliver_all, later


def test_the_fake_model_answers_with_the_line_of_the_passages_that_holds_the_answer(api, make_client, llm, chatflow):
    client = make_client("salon")
    assert not kb.ingest_paths(client_id=str(client.id), paths=[DEMO_KNOWLEDGE]).failed
    llm.set_reply(grounded_reply)

    api.post("/webhook/salon", json=chatflow_payload("Сколько стоит маникюр?"))
    assert wait_until(lambda: chatflow.sent_texts()) == [
        "Маникюр классический — цена: 5000 тг, длительность: 60 мин, также называют: маникюр, маникюр без покрытия"
    ]
    api.post("/webhook/salon", json=chatflow_payload("А в субботу до скольки работаете?", message_id="m2"))
    assert wait_until(lambda: chatflow.sent_texts()[1:]) == ["Часы работы — суббота: 10:00–18:00"]
    # the passages came from the client's own data, in the prompt the fake was given
    assert "5000 тг" in llm.chat_requests()[0]["messages"][0]["content"]


def test_the_fake_model_greets_without_passages_and_hands_over_what_it_was_not_given():
    def asked(text: str, system: str = "Ты ассистент.") -> str:
        return grounded_reply({"messages": [{"role": "system", "content": system}, {"role": "user", "content": text}]})

    assert asked("Сәлеметсіз бе!").startswith("Здравствуйте")
    assert json.loads(asked("Сколько стоит ремонт машины?")) == {
        "reply": NOT_IN_PASSAGES,
        "handoff": "no_knowledge",
        "reason": "нет в материалах",
    }
    passages = (
        "Справочные материалы (используй только их для фактов):\n<<<\n"
        "[1] Адрес\nАдрес — улица: Примерная, 1\n\n[2] Часы\nЧасы — воскресенье: выходной\n>>>"
    )
    assert asked("в воскресенье работаете?", passages) == "Часы — воскресенье: выходной"


@pytest.fixture
def demo(live_url, llm, chatflow, telegram, monkeypatch, tmp_path):
    """`demo --local-telegram` run as scripts/start.sh runs it, in a folder of the test's own (data/ files)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(settings, "admin_token", SecretStr("test-admin-token"))  # `demo` ingests through the admin API
    llm.set_reply(grounded_reply)
    assert cli.main(["demo", "--local-telegram", "--public-url", live_url, "--chatflow-token", "demo-local-fake"]) == 0
    saved = json.loads(Path("data/demo-telegram.json").read_text(encoding="utf-8"))
    assert (
        saved["chat_id"] == DEMO_CHAT_ID
        and saved["api_url"] == telegram.url
        and oct(Path("data/demo-telegram.json").stat().st_mode)[-3:] == "600"
    )
    assert telegram.webhook()["url"] == f"{live_url}/telegram-webhook/{saved['bot_id']}"
    return live_url


def _simulate(capsys, url: str, *args: str) -> tuple[int, str]:
    code = cli.main(["simulate", "--url", url, "--phone", "77010000001", "--timeout", "20", *args])
    return code, capsys.readouterr().out


def test_simulate_shows_an_answer_a_handover_a_managers_reply_and_the_return_to_the_bot(demo, chatflow, telegram, capsys):
    code, out = _simulate(capsys, demo, "Сколько стоит маникюр?")
    assert code == 0 and "reply (delivered to WhatsApp" in out and "5000 тг" in out
    assert "managers' group: nothing new" in out

    code, out = _simulate(capsys, demo, "Позовите, пожалуйста, администратора")
    assert code == 0 and "managers' group, topic «Test customer +77010000001»:" in out
    card = out.split("[card, new]", 1)[1]
    assert "Клиент: Test customer · +77010000001" in card and "buttons: ✋ Взять | ⏭ Пропустить | ✅ Решено | 🤖 Вернуть боту" in card
    assert "<b>" not in out  # plain text, as the manager reads it

    # nobody took it for half an hour: the reminder that came in since is shown by the next simulate
    later(31)
    assert reminders.check_open() == 1
    deliver_all()
    code, out = _simulate(capsys, demo, "Алло, есть кто?")
    assert code == 0 and "Менеджер скоро ответит." in out  # the customer told again after a while
    assert "⏰" in out and "[card, new]" not in out  # the reminder; the card was shown already
    # while a manager is called, the customer's message goes to the topic, and simulate says so (at once, not "60 s")
    code, out = _simulate(capsys, demo, "Хочу записаться на завтра")
    assert code == 0 and "no reply from the bot (" in out and "with a manager" in out
    assert "[text, new]" in out and "Хочу записаться на завтра" in out and "⏰" not in out

    code, out = _simulate(capsys, demo, "--as-manager", "Здравствуйте! Завтра в 11:00 свободно.")
    assert code == 0 and "wrote in the topic «Здравствуйте! Завтра в 11:00 свободно.»: HTTP 200" in out and "✅ Доставлено" in out
    assert wait_until(lambda: "Здравствуйте! Завтра в 11:00 свободно." in chatflow.sent_texts("77010000001"))
    assert "🟢 В работе · Айгерим" in out  # the card, edited: taken by the manager who replied

    code, out = _simulate(capsys, demo, "--as-manager", "--press", "return")
    assert code == 0 and "Диалог возвращён боту" in out and "Возвращено боту" in out

    code, out = _simulate(capsys, demo, "А в субботу до скольки работаете?")
    assert code == 0 and "суббота: 10:00–18:00" in out


def test_simulate_as_manager_without_a_topic_or_a_demo_says_what_is_missing(demo, capsys):
    code = cli.main(["simulate", "--url", demo, "--phone", "77010000002", "--as-manager", "Здравствуйте"])
    assert code == 2 and "has no topic in the managers' group yet" in capsys.readouterr().err
    Path("data/demo-telegram.json").unlink()
    code = cli.main(["simulate", "--url", demo, "--phone", "77010000002", "--as-manager", "Здравствуйте"])
    assert code == 2 and "run scripts/start.sh" in capsys.readouterr().err
