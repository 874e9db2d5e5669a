"""Finding 9: a Redis blip made the gateway's echo of our own reply look like a staff reply (the bot muted
itself); a .docx could unpack to gigabytes and a YAML FAQ expand aliases exponentially; no .dockerignore kept
.env and the git history out of the image."""

import io
import time
import zipfile
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from app.config import settings
from app.db import session_scope
from app.models import Conversation
from app.services.knowledge import qdrant
from tests.helpers import chatflow_payload, wait_until
from tests.test_reliability import redis_outage

ROOT = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": "Bearer admin-token-for-the-test"}


def test_our_own_echo_during_a_redis_blip_does_not_mute_the_bot(api, make_client, llm, chatflow):
    make_client("salon")
    llm.set_reply("Маникюр стоит 7000 тенге.")
    api.post("/webhook/salon", json=chatflow_payload("Сколько стоит маникюр?", phone="77015550801"))
    [sent] = wait_until(lambda: chatflow.sent("77015550801"))
    echo = chatflow_payload(sent.text, phone="77015550801", message_id=sent.message_id + "-echo")
    echo["metadata"]["fromMe"] = True
    with redis_outage():
        assert api.post("/webhook/salon", json=echo).json() == {"status": "ignored", "reason": "echo"}
    with session_scope() as session:
        conversation = session.scalar(select(Conversation))
        assert conversation is not None and conversation.bot_muted_until is None


@pytest.fixture
def admin(make_client, monkeypatch, tmp_path):
    monkeypatch.setattr(settings, "admin_token", SecretStr("admin-token-for-the-test"))
    qdrant.configure(path=tmp_path / "qdrant")
    make_client("salon")
    yield
    qdrant.configure(path=None)


def _upload(api, name, data):
    started = time.monotonic()
    response = api.post("/admin/clients/salon/kb/documents", files={"file": (name, data)}, headers=AUTH)
    return response, time.monotonic() - started


def test_a_docx_that_unpacks_to_gigabytes_is_refused(api, admin):
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("word/document.xml", "w", force_zip64=True) as member:
        for _ in range(64):
            member.write(b" " * (1024 * 1024))  # 64 MiB of blanks, a few KiB packed
    assert len(packed.getvalue()) < 200 * 1024
    response, _ = _upload(api, "bomb.docx", packed.getvalue())
    assert response.status_code == 422 and "MiB" in response.json()["detail"]


def test_yaml_aliases_are_refused(api, admin):
    laughs = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    laughs += [
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]" for i in range(12)
    ]
    response, seconds = _upload(api, "faq.yaml", "\n".join(laughs).encode())
    assert response.status_code == 422 and "aliases" in response.json()["detail"]
    assert seconds < 5


def test_the_image_leaves_secrets_and_history_out():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {".env", ".git", ".venv", "data/"} <= ignored


def test_deep_json_to_the_admin_api_is_a_readable_422(api, admin):
    body = '{"source": "a.md", "text": ' + "[" * 5000 + "]" * 5000 + "}"
    response = api.post("/admin/clients/salon/kb/documents", content=body, headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 422 and "nested" in response.json()["detail"]
