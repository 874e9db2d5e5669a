"""The learned intent classifier in a customer's turn: who gets a manager, who is left alone, who gets an
answer; a client's own examples loaded from a CSV; the language model asked only about unclear turns; one
embedding per turn."""

import json
from typing import Any

import pytest
from sqlalchemy import select

from app import cli
from app.db import session_scope
from app.intents import examples
from app.intents.rules import classify_heuristic
from app.models import BotStatus, Client, Conversation, Handover, HandoverReason, Intent, IntentExample, Message, MessageRole
from app.services import replies
from app.services.knowledge import kb
from app.services.knowledge.embeddings import E5Embedder
from tests.helpers import chatflow_payload, wait_until

PHONE = "77015550177"
CHAT = -1001234567890
ANSWER = "Ответ бота."


@pytest.fixture
def salon(make_client, chatflow, telegram):
    return make_client("salon", telegram_chat_id=CHAT, telegram_bot_token="100001:test-bot-token")


def say(api, text, slug="salon", phone=PHONE):
    assert api.post(f"/webhook/{slug}", json=chatflow_payload(text, phone=phone)).status_code == 200


def answered(chatflow, phone=PHONE) -> list[str]:
    sent: list[str] = wait_until(lambda: chatflow.sent_texts(phone), message="the reply on WhatsApp")
    return sent


def customer_intent() -> str | None:
    with session_scope() as session:
        return session.scalar(select(Message.intent).where(Message.role == MessageRole.USER).order_by(Message.created_at.desc()))


def handovers() -> list[Handover]:
    with session_scope() as session:
        return list(session.scalars(select(Handover)))


def intent_prompts(llm) -> list[dict[str, Any]]:
    """The language model's intent classifications asked so far (not its answers)."""
    return [r for r in llm.chat_requests() if r["messages"][0]["content"].startswith("Классифицируй")]


# --- decisions a customer notices ----------------------------------------------------------------------


def test_a_complaint_without_an_angry_word_reaches_a_manager_without_a_language_model(api, salon, chatflow, telegram):
    text = "мастер пришла на 40 минут позже записи"
    assert classify_heuristic(text).intent != Intent.FRUSTRATION  # the rules alone left this customer with the bot
    say(api, text)
    assert answered(chatflow) == [replies.HANDOVER_ACK_FRUSTRATION]
    assert [h.reason for h in handovers()] == [HandoverReason.FRUSTRATION]
    assert customer_intent() == Intent.FRUSTRATION


def test_a_declined_manager_is_answered_not_called(api, salon, llm, chatflow):
    llm.set_reply(ANSWER)
    say(api, "не надо менеджера, просто скажите сколько стоит педикюр")
    assert answered(chatflow) == [ANSWER]
    assert handovers() == [] and customer_intent() == Intent.QUESTION


def test_stop_that_starts_a_correction_does_not_mute_the_bot(api, salon, llm, chatflow):
    llm.set_reply(ANSWER)
    say(api, "стоп, я перепутала, мне на пятницу к 5")
    assert answered(chatflow) != [replies.OPT_OUT_ACK]
    with session_scope() as session:
        assert session.scalar(select(Conversation.bot_status)) == BotStatus.ACTIVE


def test_the_language_model_is_asked_only_about_unclear_turns(api, salon, llm, chatflow):
    llm.set_reply(
        lambda body: '{"intent": "question", "confidence": 0.9}' if body["messages"][0]["content"].startswith("Классифицируй") else ANSWER
    )
    say(api, "подскажите сколько стоит маникюр с покрытием")
    assert answered(chatflow) == [ANSWER]
    assert intent_prompts(llm) == []  # clear: the classifier decided

    say(api, "ну такое", phone="77015550178")  # the classifier is unsure
    assert answered(chatflow, "77015550178")
    assert len(intent_prompts(llm)) == 1


def test_a_turn_embeds_its_text_once(api, salon, llm, chatflow, monkeypatch):
    llm.set_reply(ANSWER)
    kb.ingest_text(client_id=str(salon.id), source="prices.md", text="# Цены\n\nПедикюр стоит 7000 тенге.", kind="markdown")
    text = "сколько у вас стоит педикюр с покрытием гель-лаком"
    embedded: list[str] = []
    original = E5Embedder.embed_query

    def counted(self: E5Embedder, query: str) -> list[float]:
        embedded.append(query)
        return original(self, query)

    monkeypatch.setattr(E5Embedder, "embed_query", counted)
    say(api, text)
    assert answered(chatflow) == [ANSWER]
    assert llm.chat_requests()[-1]["messages"][0]["content"].count("Педикюр стоит 7000") == 1  # the search ran
    assert customer_intent() == Intent.QUESTION  # and so did the classifier
    assert embedded.count(kb.query_text(text)) == 1


# --- a client's own examples ---------------------------------------------------------------------------

CSV = 'text,label\n"позвоните когда машина будет готова, заберу",other\nнаберите как закончите с машиной,other\n'


def test_client_examples_loaded_from_a_csv_change_that_client_s_decisions_only(api, make_client, chatflow, telegram, tmp_path, capsys):
    make_client("garage", telegram_chat_id=CHAT, telegram_bot_token="100001:test-bot-token")
    make_client("carwash", telegram_chat_id=CHAT - 1, telegram_bot_token="100002:test-bot-token")
    path = tmp_path / "garage.csv"
    path.write_text(CSV, encoding="utf-8-sig")  # as a spreadsheet saves it
    assert cli.main(["intent-examples", "load", "--client", "garage", str(path)]) == 0
    assert "2 loaded" in capsys.readouterr().out

    text = "позвоните как машина будет готова"
    assert cli.main(["intent", text, "--client", "garage", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["intent"], shown["decided_by"], shown["escalate"]) == ("other", "client_examples", False)
    assert shown["neighbours"][0]["label"] == "other" and shown["neighbours"][0]["similarity"] > 0.92
    assert cli.main(["intent", text, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["intent"] == "human_request"  # the shipped model alone

    say(api, text, slug="garage", phone="77015550181")
    say(api, text, slug="carwash", phone="77015550182")
    assert answered(chatflow, "77015550182") == [replies.HANDOVER_ACK]
    assert answered(chatflow, "77015550181") != [replies.HANDOVER_ACK]
    assert [h.reason for h in handovers()] == [HandoverReason.HUMAN_REQUEST]

    assert cli.main(["intent-examples", "list", "--client", "garage", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"text": "позвоните когда машина будет готова, заберу", "label": "other"},
        {"text": "наберите как закончите с машиной", "label": "other"},
    ]
    assert cli.main(["intent-examples", "clear", "--client", "garage"]) == 0
    with session_scope() as session:
        garage = session.scalar(select(Client.id).where(Client.slug == "garage"))
    assert garage is not None and examples.for_client(garage) is None


def test_a_bad_csv_is_refused_naming_its_line_and_keeps_the_loaded_examples(make_client, tmp_path, capsys):
    make_client("garage")
    good, bad, twice = tmp_path / "good.csv", tmp_path / "bad.csv", tmp_path / "twice.csv"
    good.write_text(CSV, encoding="utf-8")
    bad.write_text("text,label\nок,other\nужас просто,angry\n", encoding="utf-8")
    twice.write_text("стоп,opt_out\nстоп,other\n", encoding="utf-8")
    assert cli.main(["intent-examples", "load", "--client", "garage", str(good)]) == 0
    capsys.readouterr()

    assert cli.main(["intent-examples", "load", "--client", "garage", str(bad)]) == 2
    assert "line 3: unknown label 'angry'" in capsys.readouterr().err
    assert cli.main(["intent-examples", "load", "--client", "garage", str(twice)]) == 2
    assert "labelled both opt_out and other" in capsys.readouterr().err
    with session_scope() as session:
        assert session.scalar(select(IntentExample.id).limit(1)) is not None
        assert len(list(session.scalars(select(IntentExample.text)))) == 2


def test_the_cli_shows_the_rule_the_probabilities_and_the_decision(capsys):
    assert cli.main(["intent", "мастер пришла на 40 минут позже записи"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("frustration (escalate)  decided by model")
    assert "rule: other" in out and "model: frustration 0." in out


def test_an_unusable_classifier_leaves_the_rules_to_decide(api, salon, chatflow, telegram, monkeypatch):
    from app.intents import classifier

    def broken(*args, **kwargs):
        raise RuntimeError("model file unreadable")

    monkeypatch.setattr(classifier, "shipped", broken)
    say(api, "Позовите менеджера, пожалуйста")
    assert answered(chatflow) == [replies.HANDOVER_ACK]
    assert customer_intent() == Intent.HUMAN_REQUEST
