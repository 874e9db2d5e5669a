"""Prices are never invented: the services list is the truth. A table of price questions against a model that
answers with wrong prices (the fake OpenAI), end to end, and the guard's rules on their own."""

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from app import cli
from app.db import session_scope
from app.models import Service
from app.services.booking import catalog, prices
from tests.helpers import chatflow_payload, wait_until

PHONE = "77015550101"
CHAT = -1001234567890
SERVICES = Path(__file__).parent / "fixtures" / "salon_services.yaml"
LIST = catalog.Catalog.of(catalog.parse_yaml(SERVICES.read_text(encoding="utf-8")))

# (the customer's question, what the model answers, what the customer must read)
TABLE = [
    ("Сколько стоит маникюр?", "Маникюр стоит 5000 тг.", "Маникюр стоит 8 000 тг."),
    ("Сколько стоит маникюр?", "Маникюр стоит 8000 тг.", "Маникюр стоит 8000 тг."),
    ("маникюр қанша тұрады?", "Маникюр — 6 500 тенге, длится час.", "Маникюр — 8 000 тг, длится час."),
    ("skolko stoit manikur", "Стоимость — 7 тыс.", "Стоимость — 8 000 тг."),
    ("Цены на маникюр и педикюр?", "Маникюр — 5000 тг, педикюр — 6000 тг.", "Маникюр — 8 000 тг, педикюр — 10 000 тг."),
    ("А педикюр?", "Педикюр у нас 9 990 ₸. Записать вас?", "Педикюр у нас 10 000 тг. Записать вас?"),
    ("Сколько стоят ресницы?", "Наращивание ресниц стоит от 9000 до 20000 тг.", "Наращивание ресниц — 12 000–15 000 тг, 120 мин."),
    ("Сколько стоят ресницы?", "Наращивание ресниц — 13 000 тг.", "Наращивание ресниц — 13 000 тг."),
    ("Сколько стоит татуаж бровей?", "Татуаж бровей стоит 25000 тенге.", prices.UNKNOWN_PRICE),
    ("Сколько стоит женская стрижка?", "Стрижка стоит 3000 тг.", "Стоимость услуги «Стрижка женская» уточню у администратора."),
    ("Сколько стоит маникюр и педикюр вместе?", "Вместе будет 15000 тг.", "Маникюр — 8 000 тг, 60 мин; Педикюр — 10 000 тг, 90 мин."),
    ("Маникюр долго делается?", "Маникюр занимает 60 минут.", "Маникюр занимает 60 минут."),
    ("Завтра в 15 можно?", "Администратор подтвердит время 15:00.", "Администратор подтвердит время 15:00."),
]


@pytest.mark.parametrize(("question", "model", "expected"), TABLE, ids=[f"{i}-{q}" for i, (q, _, _) in enumerate(TABLE)])
def test_the_guard_keeps_every_price_to_the_list(question, model, expected):
    assert prices.check(model, catalog=LIST, question=question).text == expected


def test_a_client_without_a_list_keeps_its_knowledge_base_as_the_word_on_prices():
    assert prices.check("Маникюр стоит 5000 тг.", catalog=catalog.NO_SERVICES, question="маникюр").text == "Маникюр стоит 5000 тг."


@pytest.fixture
def salon(make_client, chatflow, telegram):
    client = make_client("salon", telegram_chat_id=CHAT, telegram_bot_token="100001:test-bot-token")
    assert cli.main(["services", "load", "--client", "salon", str(SERVICES)]) == 0
    return client


@pytest.mark.parametrize(("question", "model", "expected"), [TABLE[0], TABLE[4], TABLE[6], TABLE[8]])
def test_a_model_answering_a_wrong_price_is_corrected_before_the_customer_reads_it(
    api, salon, llm, chatflow, telegram, question, model, expected
):
    llm.set_reply(json.dumps({"reply": model, "handoff": "none", "reason": ""}))
    assert api.post("/webhook/salon", json=chatflow_payload(question, phone=PHONE)).status_code == 200
    assert wait_until(lambda: chatflow.sent_texts(PHONE)) == [expected]
    system = llm.chat_requests()[0]["messages"][0]["content"]
    for entry in LIST.find(question):
        assert entry.line in system  # the model was given the list's lines verbatim
    if expected == prices.UNKNOWN_PRICE:  # "уточню у администратора" is true: the administrator is asked
        topic = wait_until(lambda: telegram.topics(CHAT), message="the topic")[0].message_thread_id
        wait_until(lambda: any("нет в прайсе" in (m.text or "") for m in telegram.messages(CHAT, topic)), message="the question")


def test_the_cli_loads_and_lists_the_services_and_refuses_a_bad_file(make_client, tmp_path, capsys):
    make_client("salon")
    assert cli.main(["services", "load", "--client", "salon", str(SERVICES)]) == 0
    assert "Наращивание ресниц — 12 000–15 000 тг, 120 мин" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: Маникюр\n  price: дорого\n", encoding="utf-8")
    assert cli.main(["services", "load", "--client", "salon", str(bad)]) == 2
    assert "service 1 (Маникюр): price must be a number" in capsys.readouterr().err
    with session_scope() as session:
        assert len(list(session.scalars(select(Service)))) == 4  # the list stayed as it was
    assert cli.main(["services", "list", "--client", "salon"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "Маникюр — 8 000 тг, 60 мин  (also: маник, ногти, manikur)"
