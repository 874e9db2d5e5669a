"""What the operator touches: the CLI, /health, and the logs."""

import json
import logging
import time
from datetime import UTC, datetime

import pytest

from app import cli
from app.config import settings
from app.utils.errors import ConfigError
from app.utils.logging import JsonFormatter, mask_phone, scrub
from tests.conftest import WEBHOOK_SECRET
from tests.helpers import chatflow_payload, wait_until


def test_client_create_list_update(capsys):
    token = "cf-token-never-printed"
    assert cli.main(["client", "create", "--slug", "lotos", "--name", "Лотос", "--chatflow-token", token, "--chatflow-instance", "I"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["slug"] == "lotos" and created["chatflow"] == "own"
    assert token not in json.dumps(created)  # tokens are never printed

    assert cli.main(["client", "update", "--slug", "lotos", "--set", "buffer_wait_seconds=3", "--set", "announce_manager=true"]) == 0
    updated = json.loads(capsys.readouterr().out)
    assert updated["settings"]["buffer_wait_seconds"] == 3 and updated["settings"]["announce_manager"] is True

    assert cli.main(["client", "list", "--json"]) == 0
    assert [c["slug"] for c in json.loads(capsys.readouterr().out)] == ["lotos"]


def test_client_create_refuses_duplicates_and_bad_settings(capsys):
    assert cli.main(["client", "create", "--slug", "lotos", "--name", "Лотос"]) == 0
    capsys.readouterr()
    assert cli.main(["client", "create", "--slug", "lotos", "--name", "Again"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["client", "update", "--slug", "lotos", "--set", "buffer_wait_seconds=-5"]) == 2
    assert "buffer_wait_seconds" in capsys.readouterr().err
    assert cli.main(["client", "update", "--slug", "ghost", "--name", "X"]) == 2


def test_client_prompt_from_file(tmp_path, capsys):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Ты ассистент клиники «Шипагер».", encoding="utf-8")
    assert cli.main(["client", "create", "--slug", "clinic", "--name", "Клиника", "--prompt-file", str(prompt)]) == 0
    assert json.loads(capsys.readouterr().out)["prompt_chars"] == len("Ты ассистент клиники «Шипагер».")


def test_simulate_prints_the_reply_the_customer_gets(live_url, llm, chatflow, make_client, capsys):
    make_client("salon")
    llm.set_reply("Маникюр стоит 7000 тенге.")
    args = ["simulate", "--client", "salon", "--phone", "+7 701 000 0099", "--url", live_url, "--timeout", "15", "--secret", WEBHOOK_SECRET]
    code = cli.main([*args, "Сколько маникюр?"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Маникюр стоит 7000 тенге." in out
    assert chatflow.sent_texts("77010000099") == ["Маникюр стоит 7000 тенге."]


def test_health_reports_each_dependency(api, make_client):
    response = api.get("/health")
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "ok" and body["db"] == "ok" and body["redis"] == "ok"
    assert body["queue_backlog"] == 0
    # a turn waiting for the customer's pause to end is work the queue holds
    make_client("salon", settings={"buffer_wait_seconds": 30})
    api.post("/webhook/salon", json=chatflow_payload("Здравствуйте,"))
    assert api.get("/health").json()["queue_backlog"] == 1


def test_missing_setting_names_the_variable(monkeypatch):
    monkeypatch.setattr(settings, "chatflow_url", None)
    with pytest.raises(ConfigError, match=r"^CHATFLOW_URL is not set"):
        settings.require("chatflow_url")


def test_logs_are_json_with_masked_phones_and_no_secrets(api, llm, chatflow, make_client, caplog):
    make_client("salon", chatflow_token="super-secret-chatflow-token")
    caplog.set_level(logging.INFO)
    api.post("/webhook/salon", json=chatflow_payload("Привет", phone="77015705555"))
    wait_until(lambda: chatflow.sent_texts())
    time.sleep(0.2)

    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    events = [json.loads(line) for line in lines]
    assert any(e["event"] == "webhook.accepted" and e["phone"] == "*******5555" for e in events)
    assert any(e["event"] == "turn.processed" and "response_time_ms" in e and e["conversation_id"] for e in events)
    text = "\n".join(lines)
    assert "77015705555" not in text
    assert "super-secret-chatflow-token" not in text
    assert "test-openai-key" not in text


def test_log_scrubbing_helpers():
    assert mask_phone("77015705555@s.whatsapp.net") == "*******5555"
    assert scrub("GET https://x/api/v1/send-text?token=abc123&jid=77015705555@s.whatsapp.net") == (
        "GET https://x/api/v1/send-text?token=***&jid=*******5555@s.whatsapp.net"
    )
    assert "/bot***/" in scrub("POST https://api.telegram.org/bot123456:AAbbCC_dd-ee/sendMessage")


def test_a_log_line_carries_the_same_fields_rendered_the_cheap_way():
    # The formatter renders the date once a second and skips the scrubbing of text that cannot hold a phone or a
    # token: the line must read exactly as before.
    formatter = JsonFormatter()
    for created in (1764563000.0, 1764563000.123, 1764563000.9995, 1764563000.9999996, 1764563001.5, 1764563001.000001):
        record = logging.LogRecord("app.services.conversation.inbound", logging.INFO, __file__, 1, "webhook.accepted", None, None)
        record.created = created
        record.__dict__.update(
            {
                "client": "salon",
                "phone": "77015705555",
                "external_id": "3EB0C767D26A1D8A0E3A",
                "conversation_id": "5f0c8a3e-1234-4c8e-9d2b-0a0b0c0d0e0f",
                "note": "from +77015705555 via https://x/api?token=abc123",
                "scheduled": True,
                "wait_seconds": 1.8,
            }
        )
        line = json.loads(formatter.format(record))
        assert line["ts"] == datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert line["level"] == "info" and line["event"] == "webhook.accepted" and line["client"] == "salon"
        assert line["phone"] == "*******5555"
        assert line["external_id"] == "3EB0C767D26A1D8A0E3A" and line["conversation_id"] == "5f0c8a3e-1234-4c8e-9d2b-0a0b0c0d0e0f"
        assert line["note"] == "from ********5555 via https://x/api?token=***"
        assert line["scheduled"] is True and line["wait_seconds"] == 1.8
