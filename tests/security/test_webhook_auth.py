"""Finding 1: the ChatFlow webhook was unauthenticated by default. Now every client has a secret unless the
operator explicitly chose otherwise, and a delivery without it is refused before anything is stored."""

import json
from typing import Any

from sqlalchemy import select, update

from app import cli
from app.config import settings
from app.db import session_scope
from app.models import Client, Conversation
from tests.helpers import chatflow_payload, wait_until
from tests.security.helpers import stored_messages

NO_SECRET = {"X-Webhook-Secret": ""}


def _create(capsys, *args: str) -> dict[str, Any]:
    assert cli.main(["client", "create", "--slug", "lotos", "--name", "Лотос", *args]) == 0
    created: dict[str, Any] = json.loads(capsys.readouterr().out)
    return created


def test_a_new_client_gets_a_secret_and_refuses_deliveries_without_it(api, capsys, llm, chatflow):
    created = _create(capsys, "--public-url", "https://bot.example")
    secret = created["webhook_secret"]
    assert created["webhook_url"] == "https://bot.example/webhook/lotos" and len(secret) >= 32
    assert created["webhook_security"] == "secret"

    assert api.post("/webhook/lotos", json=chatflow_payload("Привет"), headers=NO_SECRET).status_code == 401
    assert api.post("/webhook/lotos", json=chatflow_payload("Привет"), headers={"X-Webhook-Secret": secret[:-1]}).status_code == 401
    assert stored_messages() == 0

    assert api.post("/webhook/lotos", json=chatflow_payload("Привет"), headers={"X-Webhook-Secret": secret}).json() == {"status": "ok"}
    # A gateway that cannot set headers puts it in the URL.
    response = api.post(f"/webhook/lotos?secret={secret}", json=chatflow_payload("Ещё"), headers=NO_SECRET)
    assert response.json() == {"status": "ok"}
    assert stored_messages() == 2


def test_the_secret_is_kept_only_as_a_digest(api, capsys):
    secret = _create(capsys).get("webhook_secret", "")
    assert len(secret) >= 32
    with session_scope() as session:
        row = session.execute(select(Client.__table__).where(Client.slug == "lotos")).one()._asdict()
    assert secret not in json.dumps(row, default=str)


def test_the_demo_client_is_secured_too(api, capsys, tmp_path, monkeypatch, chatflow, llm):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo"]) == 0
    assert api.post("/webhook/demo", json=chatflow_payload("Привет"), headers=NO_SECRET).status_code == 401
    saved = (tmp_path / "data" / "demo-webhook-secret").read_text().strip()
    assert oct((tmp_path / "data" / "demo-webhook-secret").stat().st_mode & 0o777) == "0o600"
    assert api.post("/webhook/demo", json=chatflow_payload("Привет"), headers={"X-Webhook-Secret": saved}).status_code == 200


def test_a_client_without_a_secret_refuses_unless_insecure_was_chosen(api, capsys, make_client):
    make_client("plain", webhook_secret=None)
    assert api.post("/webhook/plain", json=chatflow_payload("Привет"), headers=NO_SECRET).status_code == 401

    _create(capsys, "--insecure-no-secret")
    assert api.post("/webhook/lotos", json=chatflow_payload("Привет"), headers=NO_SECRET).status_code == 200
    assert cli.main(["client", "list", "--json"]) == 0
    listed = {row["slug"]: row["webhook_security"] for row in json.loads(capsys.readouterr().out)}
    assert listed == {"lotos": "INSECURE (no secret, accepted)", "plain": "no secret: deliveries refused"}


def test_a_forged_from_me_delivery_cannot_mute_the_bot(api, capsys, llm, chatflow):
    created = _create(capsys, "--chatflow-token", "cf-token", "--chatflow-instance", "inst")  # as an operator would
    gateway = {"X-Webhook-Secret": created.get("webhook_secret", "")}
    phone = "77015550404"
    assert api.post("/webhook/lotos", json=chatflow_payload("Привет", phone=phone), headers=gateway).status_code == 200
    wait_until(lambda: chatflow.sent_texts(phone), message="the bot's answer")
    forged = chatflow_payload("Мы сами ответим", phone=phone)
    forged["metadata"]["fromMe"] = True
    assert api.post("/webhook/lotos", json=forged, headers=NO_SECRET).status_code == 401
    with session_scope() as session:
        conversation = session.scalar(select(Conversation))
        assert conversation is not None and conversation.bot_muted_until is None


def test_what_was_left_open_is_named_at_start_up(api, capsys, make_client, caplog, monkeypatch):
    from app import bootstrap

    monkeypatch.setattr(settings, "worker_mode", "off")  # the session's worker is running already
    _create(capsys, "--insecure-no-secret")
    make_client("legacy")
    with session_scope() as session:  # a token stored before encryption existed
        session.execute(update(Client).where(Client.slug == "legacy").values(chatflow_token="plain"))
    with caplog.at_level("WARNING"), bootstrap.background_work():
        pass
    [record] = [r for r in caplog.records if r.getMessage() == "security.weaknesses"]
    assert record.webhook_without_secret == ["lotos"] and record.plain_text_tokens == ["legacy"]
