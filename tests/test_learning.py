"""The bot learns what it could not answer: unanswered questions are collected and grouped (`kb gaps`), a
manager's answer to one becomes a suggestion (`kb suggestions`), and an operator's `kb accept` makes it the
bot's answer for the next customer; nothing enters the knowledge base without it."""

import functools
import itertools
import json
import sys

import pytest
from sqlalchemy import func, select, text, update

from app import cli
from app.db import session_scope
from app.models import Conversation, Handover, HandoverReason, KnowledgeGap, Suggestion, SuggestionStatus
from app.services import replies
from app.services.knowledge import kb, suggestions
from app.services.operations import retention
from fakes.telegram import make_callback_update, make_message_update, make_user
from tests.conftest import TELEGRAM_SECRET
from tests.helpers import chatflow_payload, wait_until

CHAT = -1001234500017
ANNA = make_user(601, "Анна")
DEAD_URL = "http://127.0.0.1:9"  # nothing listens: the kb commands work in this process
_updates = itertools.count(7000)

SALON_KB = """# Цены
## Маникюр
Классический маникюр стоит 7000 тенге, с покрытием гель-лаком 9500 тенге.

# Режим работы
Салон работает ежедневно с 10:00 до 21:00, без выходных.
"""
ANSWER = "Да, у нас есть бесплатная парковка во дворе, въезд с улицы Сатпаева."


@pytest.fixture
def salon(make_client, chatflow, telegram):
    escalate = {"no_knowledge_policy": "escalate"}
    client = make_client("salon", telegram_chat_id=CHAT, telegram_bot_token="100017:test-bot-token", settings=escalate)
    kb.ingest_text(client_id=str(client.id), source="salon.md", text=SALON_KB, kind="markdown")
    return client


def _say(api, text: str, phone: str) -> None:
    assert api.post("/webhook/salon", json=chatflow_payload(text, phone=phone)).status_code == 200


def _tg(api, update) -> None:
    assert api.post("/telegram-webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}).status_code == 200


def _kb(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(["kb", *argv, "--client", "salon", "--url", DEAD_URL])
    return code, capsys.readouterr().out


def _open_handover_when_topic() -> tuple[Handover, int] | None:
    """The latest handover and its topic, once its card is in the topic."""
    with session_scope() as session:
        found = session.execute(
            select(Handover, Conversation.telegram_topic_id)
            .join(Conversation, Conversation.id == Handover.conversation_id)
            .order_by(Handover.created_at.desc())
            .limit(1)
        ).first()
    if found is None or found[1] is None or found[0].telegram_message_id is None:
        return None
    return found[0], found[1]


def test_a_managers_answer_becomes_the_bots_answer_once_an_operator_accepts_it(api, salon, chatflow, telegram, capsys):
    # A customer asks what the knowledge base does not hold: a manager is called, and the question is kept.
    _say(api, "Есть ли у вас парковка?", "77010001701")
    assert wait_until(lambda: chatflow.sent_texts("77010001701")) == [replies.FALLBACK_RESPONSES["no_knowledge"]]
    handover, topic = wait_until(lambda: _open_handover_when_topic())
    assert handover.reason == HandoverReason.NO_KNOWLEDGE

    # The manager answers in the topic; the customer gets it, and then the manager closes the handover.
    _tg(api, make_message_update(next(_updates), CHAT, topic, ANNA, "Здравствуйте!"))
    _tg(api, make_message_update(next(_updates), CHAT, topic, ANNA, ANSWER))
    wait_until(lambda: ANSWER in chatflow.sent_texts("77010001701"), message="the manager's answer delivered")
    _tg(api, make_callback_update(next(_updates), CHAT, handover.telegram_message_id or 0, topic, ANNA, f"resolve_{handover.id}"))

    # Nothing is in the knowledge base yet: the next customer is still handed to a manager.
    assert not [s for s in kb.list_sources(client_id=str(salon.id)) if s.source.startswith("learned-")]
    code, listed = _kb(capsys, "suggestions")
    assert code == 0 and "Q: Есть ли у вас парковка?" in listed and f"A: Здравствуйте! {ANSWER}" in listed and "by Анна" in listed
    [suggestion_id] = [line.split()[0] for line in listed.splitlines() if line.endswith("Анна")]

    # The operator trims the greeting and accepts it.
    code, out = _kb(capsys, "accept", suggestion_id, "--answer", ANSWER)
    assert code == 0 and "learned-" in out
    with session_scope() as session:
        stored = session.scalar(select(Suggestion))
        assert stored is not None and (stored.status, stored.answer) == (SuggestionStatus.ACCEPTED, ANSWER)
    assert _kb(capsys, "suggestions")[1].startswith("no suggestions")

    # The next customer gets the answer from the bot (no model configured: the Q&A entry is quoted).
    _say(api, "Есть ли у вас парковка?", "77010001702")
    assert wait_until(lambda: chatflow.sent_texts("77010001702")) == [ANSWER]
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Handover)) == 1


def test_a_rejected_suggestion_adds_nothing_and_a_decided_one_cannot_be_decided_again(api, salon, chatflow, telegram, capsys):
    _say(api, "Можно прийти с собакой?", "77010001711")
    _, topic = wait_until(lambda: _open_handover_when_topic())
    _tg(api, make_message_update(next(_updates), CHAT, topic, ANNA, "С собаками нельзя, извините."))
    wait_until(lambda: "С собаками нельзя, извините." in chatflow.sent_texts("77010001711"))
    [row] = json.loads(_kb(capsys, "suggestions", "--json")[1])
    assert (row["question"], row["answer"]) == ("Можно прийти с собакой?", "С собаками нельзя, извините.")

    assert _kb(capsys, "reject", row["id"][:8])[0] == 0
    assert not [s for s in kb.list_sources(client_id=str(salon.id)) if s.source.startswith("learned-")]
    assert _kb(capsys, "accept", row["id"][:8])[0] == 2  # already rejected
    assert _kb(capsys, "accept", "ffffffff")[0] == 2  # no such suggestion
    assert not [s for s in kb.list_sources(client_id=str(salon.id)) if s.source.startswith("learned-")]


def test_accept_edit_opens_the_editor_on_the_question_and_answer(api, salon, chatflow, telegram, capsys, monkeypatch, tmp_path):
    _say(api, "Есть ли у вас парковка?", "77010001721")
    _, topic = wait_until(lambda: _open_handover_when_topic())
    _tg(api, make_message_update(next(_updates), CHAT, topic, ANNA, "есть, во дворе"))
    wait_until(lambda: "есть, во дворе" in chatflow.sent_texts("77010001721"))
    [row] = json.loads(_kb(capsys, "suggestions", "--json")[1])
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys, pathlib\n"
        "p = pathlib.Path(sys.argv[1])\n"
        f"p.write_text(p.read_text(encoding='utf-8').replace('есть, во дворе', {ANSWER!r}), encoding='utf-8')\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("VISUAL", f"{sys.executable} {editor}")
    assert _kb(capsys, "accept", row["id"], "--edit")[0] == 0
    [source] = [s.source for s in kb.list_sources(client_id=str(salon.id)) if s.source.startswith("learned-")]
    [hit] = kb.search(client_id=str(salon.id), query="парковка есть?", limit=1)
    assert hit.source == source and ANSWER in hit.text


def test_unanswered_questions_are_grouped_with_the_vectors_their_search_computed(api, make_client, chatflow, capsys):
    client = make_client("salon")  # clarify, then offer a manager
    kb.ingest_text(client_id=str(client.id), source="salon.md", text=SALON_KB, kind="markdown")
    for phone, question in (
        ("77010001731", "Вы делаете ремонт автомобилей?"),
        ("77010001732", "ремонт машин делаете?"),
        ("77010001733", "Вы делаете ремонт автомобилей?"),
        ("77010001734", "Есть ли у вас парковка для машин"),
    ):
        _say(api, question, phone)
        assert wait_until(functools.partial(chatflow.sent_texts, phone)) == [replies.CLARIFY]
    # A question the bot answered is not a gap.
    _say(api, "До скольки работает салон?", "77010001735")
    wait_until(lambda: chatflow.sent_texts("77010001735"))

    with session_scope() as session:
        rows = session.execute(select(KnowledgeGap.question, KnowledgeGap.vector, KnowledgeGap.embedder)).all()
    assert len(rows) == 4 and all(vector is not None and len(vector) == 384 and embedder for _, vector, embedder in rows)

    code, out = _kb(capsys, "gaps")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].lstrip().startswith("3×  Вы делаете ремонт автомобилей?")
    assert lines[1].strip() == "also: ремонт машин делаете?"
    assert lines[2].lstrip().startswith("1×  Есть ли у вас парковка для машин")


def test_the_yes_to_the_offer_of_a_manager_links_the_questions_not_the_yes(api, make_client, chatflow, capsys):
    client = make_client("salon")
    kb.ingest_text(client_id=str(client.id), source="salon.md", text=SALON_KB, kind="markdown")
    phone = "77010001741"
    _say(api, "Вы делаете ремонт автомобилей?", phone)
    wait_until(lambda: len(chatflow.sent_texts(phone)) == 1)
    _say(api, "ремонт двигателя", phone)
    assert wait_until(lambda: len(chatflow.sent_texts(phone)) == 2 and chatflow.sent_texts(phone))[-1] == replies.OFFER_MANAGER
    _say(api, "да", phone)
    assert wait_until(lambda: len(chatflow.sent_texts(phone)) == 3 and chatflow.sent_texts(phone))[-1] == replies.HANDOVER_ACK
    with session_scope() as session:
        handover_id = session.scalar(select(Handover.id).where(Handover.reason == HandoverReason.NO_KNOWLEDGE))
        linked = session.execute(select(KnowledgeGap.question, KnowledgeGap.handover_id).order_by(KnowledgeGap.created_at)).all()
    assert handover_id is not None
    assert linked == [("Вы делаете ремонт автомобилей?", handover_id), ("ремонт двигателя", handover_id)]
    out = _kb(capsys, "gaps", "--json")[1]
    assert sum(group["handovers"] for group in json.loads(out)) == 2


def test_questions_and_suggestions_follow_the_clients_retention(api, salon, chatflow, telegram):
    _say(api, "Есть ли у вас парковка?", "77010001751")
    _, topic = wait_until(lambda: _open_handover_when_topic())
    _tg(api, make_message_update(next(_updates), CHAT, topic, ANNA, ANSWER))
    wait_until(lambda: ANSWER in chatflow.sent_texts("77010001751"))
    with session_scope() as session:
        suggestions.collect(session, client_id=salon.id)
        session.execute(update(KnowledgeGap).values(created_at=func.now() - text("interval '181 days'")))
        session.execute(update(Suggestion).values(created_at=func.now() - text("interval '181 days'")))
    _say(api, "Можно прийти с собакой?", "77010001752")
    wait_until(lambda: chatflow.sent_texts("77010001752"))

    pruned = retention.prune()

    assert (pruned["knowledge_gaps"], pruned["kb_suggestions"]) == (1, 1)
    with session_scope() as session:
        assert list(session.scalars(select(KnowledgeGap.question))) == ["Можно прийти с собакой?"]
        assert session.scalar(select(func.count()).select_from(Suggestion)) == 0


def test_without_managers_to_tell_the_questions_are_still_collected(api, make_client, chatflow, capsys):
    client = make_client("salon", telegram_chat_id=None)
    kb.ingest_text(client_id=str(client.id), source="salon.md", text=SALON_KB, kind="markdown")
    phone = "77010001761"
    _say(api, "Вы делаете ремонт автомобилей?", phone)
    assert wait_until(lambda: chatflow.sent_texts(phone)) == [replies.CLARIFY]
    _say(api, "ремонт двигателя", phone)
    assert wait_until(lambda: len(chatflow.sent_texts(phone)) == 2 and chatflow.sent_texts(phone))[-1] == replies.NO_KNOWLEDGE_ALONE
    with session_scope() as session:
        assert list(session.scalars(select(KnowledgeGap.question).order_by(KnowledgeGap.created_at))) == [
            "Вы делаете ремонт автомобилей?",
            "ремонт двигателя",
        ]
