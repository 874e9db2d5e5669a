"""The knowledge base from the operator's side: the admin HTTP API and the `kb` CLI commands."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import SecretStr

from app import cli, cli_kb
from app.config import settings
from app.db import session_scope
from app.services import clients
from app.services.knowledge import kb, qdrant
from tests.test_kb import DELIVERY_MD, _docx, _pdf

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """ADMIN_TOKEN set, and an empty embedded knowledge base of this test's own."""
    monkeypatch.setattr(settings, "admin_token", SecretStr(TOKEN))
    qdrant.configure(path=tmp_path / "qdrant")
    yield
    qdrant.configure(path=None)


def _documents(api: TestClient, slug: str) -> dict[str, int]:
    response = api.get(f"/admin/clients/{slug}/kb/documents", headers=AUTH)
    assert response.status_code == 200, response.text
    return {row["source"]: row["chunks"] for row in response.json()}


def _search(api: TestClient, slug: str, query: str, limit: int = 5) -> list[dict[str, Any]]:
    response = api.get(f"/admin/clients/{slug}/kb/search", params={"q": query, "limit": limit}, headers=AUTH)
    assert response.status_code == 200, response.text
    hits: list[dict[str, Any]] = response.json()
    return hits


# --- the admin API ---------------------------------------------------------------------------------


def test_admin_api_needs_the_bearer_token(api: TestClient, admin: None, make_client: Callable[..., Any]) -> None:
    make_client("salon")
    path = "/admin/clients/salon/kb/documents"
    assert api.get(path).status_code == 401
    assert api.get(path, headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    assert api.get(path, headers={"Authorization": TOKEN}).status_code == 401  # no scheme
    # refused before the upload is even read
    assert api.post(path, files={"file": ("a.md", b"# A")}, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert api.get(path, headers=AUTH).status_code == 200


def test_admin_api_is_off_without_admin_token(api: TestClient, make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    make_client("salon")
    monkeypatch.setattr(settings, "admin_token", None)
    response = api.get("/admin/clients/salon/kb/documents", headers=AUTH)
    assert response.status_code == 503
    assert "ADMIN_TOKEN" in response.json()["detail"]


def test_upload_every_format_then_list_search_and_delete(
    api: TestClient, admin: None, make_client: Callable[..., Any], tmp_path: Path
) -> None:
    make_client("salon")
    files = [
        ("file", ("delivery.md", DELIVERY_MD.encode())),
        ("file", ("notes.txt", "Салон закрыт на санитарный день каждый последний понедельник месяца.".encode())),
        ("file", ("faq.yaml", yaml.safe_dump([{"q": "Есть ли парковка?", "a": "Да, бесплатная во дворе."}], allow_unicode=True).encode())),
        ("file", ("faq.json", json.dumps({"Оплата": [{"q": "Принимаете Kaspi?", "a": "Да, Kaspi QR."}]}, ensure_ascii=False).encode())),
        (
            "file",
            (
                "rules.docx",
                _docx(tmp_path / "rules.docx", [("Heading1", "Гарантия"), (None, "На маникюр гарантия семь дней.")]).read_bytes(),
            ),
        ),
        ("file", ("menu.pdf", _pdf(tmp_path / "menu.pdf", "Warranty claims are accepted within 30 days").read_bytes())),
    ]
    response = api.post("/admin/clients/salon/kb/documents", files=files, headers=AUTH)
    assert response.status_code == 200, response.text
    report = response.json()
    assert [(row["source"], row["status"]) for row in report["documents"]] == [
        ("delivery.md", "added"),
        ("notes.txt", "added"),
        ("faq.yaml", "added"),
        ("faq.json", "added"),
        ("rules.docx", "added"),
        ("menu.pdf", "added"),
    ]
    assert report["chunks"] == 8

    as_json = api.post(
        "/admin/clients/salon/kb/documents", json={"source": "hours.md", "text": "## Часы работы\nС 9 до 21 без выходных."}, headers=AUTH
    )
    assert as_json.status_code == 200, as_json.text
    assert as_json.json()["documents"] == [{"source": "hours.md", "chunks": 1, "status": "added", "removed": 0}]
    listed = _documents(api, "salon")
    assert listed == {"delivery.md": 3, "notes.txt": 1, "faq.yaml": 1, "faq.json": 1, "rules.docx": 1, "menu.pdf": 1, "hours.md": 1}

    hits = _search(api, "salon", "сколько стоит доставка курьером", limit=3)
    assert len(hits) == 3 and all(set(hit) == {"text", "score", "source", "heading"} for hit in hits)
    assert (hits[0]["source"], hits[0]["heading"]) == ("delivery.md", "Доставка > Стоимость")
    assert "1 500 тенге" in hits[0]["text"]
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    assert _search(api, "salon", "во сколько вы открываетесь", limit=1)[0]["heading"] == "Часы работы"
    assert _search(api, "salon", "warranty claims", limit=1)[0]["source"] == "menu.pdf"

    assert api.delete("/admin/clients/salon/kb/documents/delivery.md", headers=AUTH).json() == {"source": "delivery.md", "deleted": 3}
    assert api.delete("/admin/clients/salon/kb/documents/delivery.md", headers=AUTH).status_code == 404
    assert "delivery.md" not in _documents(api, "salon")
    assert all(hit["source"] != "delivery.md" for hit in _search(api, "salon", "сколько стоит доставка курьером"))


def test_reupload_replaces_a_document(api: TestClient, admin: None, make_client: Callable[..., Any]) -> None:
    make_client("salon")
    path = "/admin/clients/salon/kb/documents"
    first = api.post(path, json={"source": "notes.txt", "text": "Самовывоз бесплатный.", "kind": "text"}, headers=AUTH).json()
    same = api.post(path, json={"source": "notes.txt", "text": "Самовывоз бесплатный.", "kind": "text"}, headers=AUTH).json()
    changed = api.post(path, files={"file": ("notes.txt", "Самовывоз стоит 500 тенге.".encode())}, headers=AUTH).json()

    assert [report["documents"][0]["status"] for report in (first, same, changed)] == ["added", "unchanged", "replaced"]
    assert [hit["text"] for hit in _search(api, "salon", "самовывоз")] == ["Самовывоз стоит 500 тенге."]


def test_clients_never_see_each_others_documents_through_the_api(api: TestClient, admin: None, make_client: Callable[..., Any]) -> None:
    make_client("clinic")
    make_client("salon")
    secret = "Код доступа в серверную клиники: синий кит 4471."
    assert api.post("/admin/clients/clinic/kb/documents", json={"source": "internal.txt", "text": secret}, headers=AUTH).status_code == 200
    assert api.post("/admin/clients/salon/kb/documents", json={"source": "faq.md", "text": DELIVERY_MD}, headers=AUTH).status_code == 200

    for query in (secret, "код доступа в серверную", "синий кит 4471"):
        assert all(hit["source"] == "faq.md" and "4471" not in hit["text"] for hit in _search(api, "salon", query, limit=20))
    assert _search(api, "clinic", "синий кит 4471", limit=1)[0]["source"] == "internal.txt"
    assert _documents(api, "salon") == {"faq.md": 3}
    # a document name of another client is not found, not deleted
    assert api.delete("/admin/clients/salon/kb/documents/internal.txt", headers=AUTH).status_code == 404
    assert _documents(api, "clinic") == {"internal.txt": 1}
    assert api.get("/admin/clients/ghost/kb/search", params={"q": "код"}, headers=AUTH).status_code == 404


def test_bad_uploads_are_refused_with_a_reason(
    api: TestClient, admin: None, make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_client("salon")
    path = "/admin/clients/salon/kb/documents"

    def refused(expected: int, **request: Any) -> str:
        request["headers"] = {**AUTH, **request.get("headers", {})}
        response = api.post(path, **request)
        assert response.status_code == expected, response.text
        return str(response.json()["detail"])

    assert ".docx" in refused(422, files={"file": ("photo.png", b"\x89PNG")})
    # an upload may be larger than a webhook body (256 KB): read and judged, not cut off at the door
    assert ".docx" in refused(422, files={"file": ("scan.png", b"\x89PNG" + bytes(400 * 1024))})
    assert "YAML" in refused(422, files=[("file", ("good.md", b"## Ok\nfine")), ("file", ("broken.yaml", b"a: [unclosed"))])
    assert "UTF-8" in refused(422, files={"file": ("latin.txt", "Привет".encode("cp1251"))})
    assert "DOCX" in refused(422, files={"file": ("fake.docx", b"not a zip")})
    assert "no file" in refused(422, files={"note": (None, "hello")})  # multipart without a file part
    assert "multipart" in refused(422, data={"note": "hello"})  # a urlencoded form
    assert "JSON" in refused(422, json={"source": "a.txt"})
    assert "multipart" in refused(422, content=b"plain", headers={**AUTH, "Content-Type": "text/plain"})
    monkeypatch.setattr(settings, "kb_upload_max_bytes", 1000)
    assert "1000 bytes" in refused(413, files={"file": ("big.txt", ("слово " * 400).encode())})
    assert _documents(api, "salon") == {}  # nothing of a refused upload was stored, not even good.md
    assert api.post("/admin/clients/ghost/kb/documents", json={"source": "a.txt", "text": "x"}, headers=AUTH).status_code == 404


def test_search_parameters_are_validated(api: TestClient, admin: None, make_client: Callable[..., Any]) -> None:
    make_client("salon")
    assert api.get("/admin/clients/salon/kb/search", headers=AUTH).status_code == 422
    assert api.get("/admin/clients/salon/kb/search", params={"q": "x", "limit": 0}, headers=AUTH).status_code == 422
    assert api.get("/admin/clients/salon/kb/search", params={"q": "x", "limit": 500}, headers=AUTH).status_code == 422
    assert _search(api, "salon", "что угодно") == []  # an empty knowledge base is not an error


def test_unreachable_qdrant_answers_503(
    api: TestClient, admin: None, make_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    make_client("salon")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(settings, "qdrant_url", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(settings, "qdrant_retries", 1)
    qdrant.configure(path=None)
    try:
        response = api.get("/admin/clients/salon/kb/search", params={"q": "доставка"}, headers=AUTH)
    finally:
        qdrant.close()
    assert response.status_code == 503
    assert "knowledge base unavailable" in response.json()["detail"]


# --- the CLI against a running service ---------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_ingests_lists_searches_and_deletes_through_the_service(
    live_url: str, admin: None, make_client: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_client("salon")
    folder = tmp_path / "kb"
    (folder / "faq").mkdir(parents=True)
    (folder / "delivery.md").write_text(DELIVERY_MD, encoding="utf-8")
    (folder / "faq" / "parking.yaml").write_text(
        yaml.safe_dump([{"q": "Есть ли парковка?", "a": "Да, бесплатная во дворе."}], allow_unicode=True), encoding="utf-8"
    )
    (folder / "photo.png").write_bytes(b"\x89PNG")  # not a document: skipped inside a folder
    extra = tmp_path / "notes.txt"
    extra.write_text("Работаем без выходных.", encoding="utf-8")
    target = ("--client", "salon", "--url", live_url)

    code, out, err = _cli(capsys, "kb", "ingest", *target, str(folder), str(extra))
    assert code == 0, err
    assert "added     delivery.md  (3 chunks)" in out and "faq/parking.yaml" in out and "3 document(s), 5 chunks; 0 failed" in out
    assert kb.list_sources(client_id=str(_client_id("salon")))  # stored by the service, in its store

    code, out, _ = _cli(capsys, "kb", "list", *target, "--json")
    assert code == 0
    assert {row["source"]: row["chunks"] for row in json.loads(out)} == {"delivery.md": 3, "faq/parking.yaml": 1, "notes.txt": 1}

    code, out, _ = _cli(capsys, "kb", "search", *target, "сколько стоит доставка курьером", "--json", "--limit", "2")
    hits = json.loads(out)
    assert code == 0 and len(hits) == 2
    assert hits[0]["heading"] == "Доставка > Стоимость" and isinstance(hits[0]["score"], float) and "1 500" in hits[0]["text"]

    code, out, _ = _cli(capsys, "kb", "search", *target, "где припарковаться")
    assert code == 0
    first = out.splitlines()[0]
    assert first.startswith("1. 0.") and "faq/parking.yaml" in first and "Есть ли парковка?" in first
    assert "бесплатная во дворе" in out.splitlines()[1]

    code, out, _ = _cli(capsys, "kb", "delete", *target, "faq/parking.yaml")
    assert (code, out.strip()) == (0, "deleted faq/parking.yaml (1 chunks)")
    code, _, err = _cli(capsys, "kb", "delete", *target, "faq/parking.yaml")
    assert code == 2 and "no document" in err


def test_cli_reports_errors_with_exit_code_2(
    live_url: str,
    admin: None,
    make_client: Callable[..., Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    make_client("salon")
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [unclosed", encoding="utf-8")
    good = tmp_path / "good.md"
    good.write_text("## Оплата\nКартой и наличными.", encoding="utf-8")

    code, out, err = _cli(
        capsys, "kb", "ingest", "--client", "salon", "--url", live_url, str(good), str(broken), str(tmp_path / "missing.md")
    )
    assert code == 2
    assert "good.md" in out and "broken.yaml" in err and "YAML" in err and "no such file" in err

    code, _, err = _cli(capsys, "kb", "list", "--client", "ghost", "--url", live_url)
    assert code == 2 and "unknown client 'ghost'" in err

    code, out, _ = _cli(capsys, "kb", "search", "--client", "salon", "--url", live_url, "погода на завтра", "--json")
    assert code == 0 and all(hit["source"] == "good.md" for hit in json.loads(out))

    # the CLI with another token than the service's (they share one settings object in this process)
    monkeypatch.setattr(cli_kb, "settings", settings.model_copy(update={"admin_token": SecretStr("another-token")}))
    code, _, err = _cli(capsys, "kb", "list", "--client", "salon", "--url", live_url)
    assert code == 2 and "HTTP 401" in err


def test_cli_works_in_process_when_no_service_answers(
    admin: None, make_client: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_client("salon")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    notes = tmp_path / "notes.txt"
    notes.write_text("Работаем без выходных с 9 до 21.", encoding="utf-8")

    code, out, err = _cli(capsys, "kb", "ingest", "--client", "salon", "--url", closed, str(notes))
    assert code == 0, err
    assert "added     notes.txt  (1 chunks)" in out
    code, out, _ = _cli(capsys, "kb", "search", "--client", "salon", "--url", closed, "вы работаете в воскресенье?", "--json")
    assert code == 0 and json.loads(out)[0]["source"] == "notes.txt"
    code, out, _ = _cli(capsys, "kb", "list", "--client", "salon", "--url", closed)
    assert code == 0 and out.startswith("notes.txt")


def _client_id(slug: str) -> str:
    with session_scope() as session:
        return str(clients.get_by_slug(session, slug).id)
