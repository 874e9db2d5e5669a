"""Knowledge base: loaders, chunking, ingestion lifecycle, tenant isolation, relevance, failure modes.

Every test gets its own embedded Qdrant folder; the e5 embedder is loaded once per process.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import struct
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from pydantic import SecretStr

from app.config import settings
from app.services.knowledge import embeddings, kb, qdrant
from app.utils.errors import ExternalServiceError

FIXTURE = Path(__file__).resolve().parent.parent / "bench" / "fixtures" / "kb"

DELIVERY_MD = """# Магазин «Тест»

## Доставка
Доставляем по городу ежедневно.

### Стоимость
Доставка курьером стоит 1 500 тенге, от 20 000 тенге бесплатно.

## Возврат
Вернуть товар можно в течение 14 дней с чеком.
"""


@pytest.fixture
def empty_kb(tmp_path: Path) -> Iterator[None]:
    """An empty embedded Qdrant in this test's temporary folder."""
    qdrant.configure(path=tmp_path / "qdrant")
    yield
    qdrant.configure(path=None)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _headings(client_id: str, query: str, limit: int = 3) -> list[str]:
    return [hit.heading for hit in kb.search(client_id=client_id, query=query, limit=limit)]


# --- loaders and chunking (no Qdrant) -------------------------------------------------------------


def test_markdown_chunks_start_with_their_heading_path() -> None:
    sections = kb.parse_document(DELIVERY_MD, "markdown")
    chunks = kb.chunk_sections(sections, target_chars=700, overlap_chars=100)

    assert [chunk.heading for chunk in chunks] == ["Доставка", "Доставка > Стоимость", "Возврат"]
    assert chunks[1].text.startswith("Доставка > Стоимость\n")
    assert "1 500 тенге" in chunks[1].text
    assert all("Магазин" not in chunk.text for chunk in chunks)  # the document title is not a section


def test_long_section_is_split_by_sentences_with_overlap() -> None:
    sentences = [f"Правило номер {index} гласит, что клиент всегда получает ответ за {index} минут." for index in range(30)]
    sections = kb.parse_document("## Правила\n" + " ".join(sentences), "markdown")
    chunks = kb.chunk_sections(sections, target_chars=400, overlap_chars=120)

    assert len(chunks) > 3
    assert all(chunk.text.startswith("Правила\n") and len(chunk.text) <= 420 for chunk in chunks)
    first_body, second_body = chunks[0].text.split("\n", 1)[1], chunks[1].text.split("\n", 1)[1]
    assert second_body.split(". ")[0].rstrip(".") in first_body  # the boundary sentence is repeated
    joined = " ".join(chunk.text for chunk in chunks)
    assert all(sentence in joined for sentence in sentences)  # nothing lost


def test_faq_accepts_question_answer_lists_and_mappings() -> None:
    listed = kb.parse_document(yaml.safe_dump([{"q": "Есть парковка?", "a": "Да, бесплатная."}]), "faq")
    mapped = kb.parse_document(json.dumps({"Оплата": {"Принимаете Kaspi?": "Да, Kaspi QR."}}), "faq")

    assert [(section.heading, section.body) for section in listed] == [("Есть парковка?", "Да, бесплатная.")]
    assert [(section.heading, section.body) for section in mapped] == [("Оплата > Принимаете Kaspi?", "Да, Kaspi QR.")]


SALON_YAML = """
name: Салон «Тест»
address:
  street: ул. Примерная, 1
  landmarks: [напротив парка, рядом с остановкой]
hours:
  пн-пт: 10:00–20:00
  вс: выходной
services:
  Ногти:
    - name: Маникюр классический
      aliases: [маникюр]
      price: 5000 тг
      duration: 60 мин
promotions:
  - title: Скидка в день рождения
    discount: 15%
    rules: [за 3 дня до и после, не суммируется]
policies:
  - Запись: в WhatsApp, администратор подтвердит.
  - Отмена не позднее чем за 3 часа.
faq:
  - question: Есть парковка?
    answer: Да, во дворе.
"""


def test_any_yaml_loads_as_passages_that_keep_each_fact_with_its_context() -> None:
    sections = {section.heading: section.body for section in kb.parse_document(SALON_YAML, "faq")}

    assert sections == {
        "": "название: Салон «Тест»",
        "Адрес": "Адрес — улица: ул. Примерная, 1\nАдрес — ориентиры: напротив парка, рядом с остановкой",
        "Часы работы": "Часы работы — пн-пт: 10:00–20:00\nЧасы работы — вс: выходной",
        # an item's name, price and duration on one line, under its own heading
        "Услуги > Ногти > Маникюр классический": "Маникюр классический — цена: 5000 тг, длительность: 60 мин, также называют: маникюр",
        "Акции > Скидка в день рождения": "Скидка в день рождения — скидка: 15%, условия: за 3 дня до и после, не суммируется",
        # "- Запись: в WhatsApp" is a sentence of the list, not a section
        "Правила": "Запись: в WhatsApp, администратор подтвердит.\nОтмена не позднее чем за 3 часа.",
        "Вопросы и ответы > Есть парковка?": "Да, во дворе.",
    }
    listed = kb.parse_document(json.dumps({"items": [{"title": "Без ответа"}]}, ensure_ascii=False), "faq")
    assert [(section.heading, section.body) for section in listed] == [("items", "title: Без ответа")]  # no longer refused


def test_a_structured_file_that_is_too_deep_or_too_big_is_refused_with_a_reason() -> None:
    deep: Any = "дно"
    for _ in range(kb.STRUCTURED_MAX_DEPTH + 2):
        deep = {"уровень": [deep]}
    with pytest.raises(ValueError, match="nested deeper"):
        kb.parse_document(json.dumps(deep, ensure_ascii=False), "faq")
    with pytest.raises(ValueError, match="larger than"):
        kb.parse_document("a: " + "x" * kb.STRUCTURED_MAX_BYTES, "faq")
    with pytest.raises(ValueError, match="aliases"):
        kb.parse_document("a: &a [1, 2]\nb: [*a, *a]", "faq")


def test_a_question_finds_the_passage_of_a_structured_file_holding_its_answer(empty_kb: None) -> None:
    report = kb.ingest_paths(client_id="aisulu", paths=[FIXTURE / "structured" / "studio.yaml"])
    assert not report.failed

    price = kb.search(client_id="aisulu", query="сколько стоит маникюр?", limit=3)[0]
    assert price.heading == "Услуги > Ногти > Аппаратный маникюр" and "6000 тг" in price.text and "60 мин" in price.text
    assert price.score >= settings.kb_min_score
    friend = kb.search(client_id="aisulu", query="если приведу подругу, будет скидка?", limit=3)[0]
    assert friend.heading == "Акции > Приведи подругу" and "2000 тг" in friend.text
    sterile = kb.search(client_id="aisulu", query="инструменты стерилизуете?", limit=3)[0]
    assert sterile.heading == "Вопросы и ответы > Есть ли стерилизация инструментов?"


def test_kazakh_and_transliterated_words_share_terms_with_russian() -> None:
    def shared(left: str, right: str) -> set[str]:
        return set(embeddings.tokenize(left)) & set(embeddings.tokenize(right))

    assert shared("Жеңілдіктер бар ма?", "скидки для студентов")
    assert shared("жеткізу", "доставка")
    assert shared("skolko stoit manikur", "маникюр")
    assert shared("kakaya cena", "цена")  # the same reading of Latin letters as the intent rules (c is ц)
    assert shared("канша", "қанша") == set() and embeddings.tokenize("канша") == []  # stopword either way
    # stable across processes: a salted hash() would differ from run to run
    assert embeddings.sparse_query("цена")[0] == embeddings.sparse_query("цены")[0]
    assert embeddings.sparse_query("цена")[0] == [embeddings._token_index("цен")]
    assert embeddings._token_index("цен") == 248488269


# --- ingestion lifecycle -------------------------------------------------------------------------


def _docx(path: Path, paragraphs: list[tuple[str | None, str]]) -> Path:
    ns = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    body = "".join(
        "<w:p>" + (f'<w:pPr><w:pStyle w:val="{style}"/></w:pPr>' if style else "") + f"<w:r><w:t>{text}</w:t></w:r></w:p>"
        for style, text in paragraphs
    )
    styles = f'<w:styles {ns}><w:style w:styleId="Heading1"><w:name w:val="heading 1"/></w:style></w:styles>'
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("word/document.xml", f"<w:document {ns}><w:body>{body}</w:body></w:document>")
        archive.writestr("word/styles.xml", styles)
    return path


def _pdf(path: Path, text: str) -> Path:
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path


def test_ingest_every_format_and_find_its_content(empty_kb: None, tmp_path: Path) -> None:
    files = [
        _write(tmp_path / "delivery.md", DELIVERY_MD),
        _write(tmp_path / "notes.txt", "Салон закрыт на санитарный день каждый последний понедельник месяца."),
        _write(
            tmp_path / "faq.yaml",
            yaml.safe_dump([{"question": "Есть ли парковка?", "answer": "Да, бесплатная во дворе."}], allow_unicode=True),
        ),
        _write(
            tmp_path / "faq.json",
            json.dumps({"Оплата": [{"q": "Принимаете Kaspi?", "a": "Да, Kaspi QR и Kaspi Red."}]}, ensure_ascii=False),
        ),
        _docx(tmp_path / "rules.docx", [("Heading1", "Гарантия"), (None, "На маникюр даём гарантию семь дней.")]),
        _write(tmp_path / "image.png", "not a document"),
    ]
    pypdf_available = True
    try:
        import pypdf  # noqa: F401
    except ImportError:
        pypdf_available = False
    if pypdf_available:
        files.append(_pdf(tmp_path / "menu.pdf", "Warranty claims are accepted within 30 days"))

    report = kb.ingest_paths(client_id="shop", paths=files)

    assert list(report.failed) == [str(tmp_path / "image.png")]
    stored = {info.source: info.chunks for info in kb.list_sources(client_id="shop")}
    expected = {"delivery.md": 3, "notes.txt": 1, "faq.yaml": 1, "faq.json": 1, "rules.docx": 1}
    if pypdf_available:
        expected["menu.pdf"] = 1
    assert stored == expected
    assert _headings("shop", "сколько стоит доставка курьером", 1) == ["Доставка > Стоимость"]
    assert _headings("shop", "где поставить машину?", 1) == ["Есть ли парковка?"]
    assert _headings("shop", "можно оплатить через каспи", 1) == ["Оплата > Принимаете Kaspi?"]
    assert _headings("shop", "гарантия на маникюр", 1) == ["Гарантия"]
    top = kb.search(client_id="shop", query="санитарный день", limit=1)[0]
    assert (top.source, top.heading) == ("notes.txt", "")
    if pypdf_available:
        assert kb.search(client_id="shop", query="warranty claims", limit=1)[0].source == "menu.pdf"


def test_reingesting_a_changed_file_replaces_its_chunks(empty_kb: None, tmp_path: Path) -> None:
    path = _write(tmp_path / "delivery.md", DELIVERY_MD)
    first = kb.ingest_paths(client_id="shop", paths=[path])
    again = kb.ingest_paths(client_id="shop", paths=[path])
    _write(path, DELIVERY_MD.replace("1 500 тенге", "2 700 тенге"))
    changed = kb.ingest_paths(client_id="shop", paths=[path])

    assert [result.status for result in (first.sources[0], again.sources[0], changed.sources[0])] == [
        "added",
        "unchanged",
        "replaced",
    ]
    assert kb.list_sources(client_id="shop")[0].chunks == 3
    texts = " ".join(hit.text for hit in kb.search(client_id="shop", query="стоимость доставки", limit=5))
    assert "2 700 тенге" in texts and "1 500 тенге" not in texts

    _write(path, "## Доставка\nТолько самовывоз.")
    shrunk = kb.ingest_paths(client_id="shop", paths=[path])
    assert (shrunk.sources[0].chunks, shrunk.sources[0].removed) == (1, 2)
    assert [hit.text for hit in kb.search(client_id="shop", query="возврат товара", limit=5)] == ["Доставка\nТолько самовывоз."]


def test_list_and_delete_sources_and_clients(empty_kb: None) -> None:
    kb.ingest_text(client_id="shop", source="delivery.md", text=DELIVERY_MD, kind="markdown")
    kb.ingest_text(client_id="shop", source="notes.txt", text="Работаем без выходных.", kind="text")
    kb.ingest_text(client_id="cafe", source="menu.txt", text="Кофе 900 тенге.", kind="text")

    sources = kb.list_sources(client_id="shop")
    assert [(info.source, info.chunks) for info in sources] == [("delivery.md", 3), ("notes.txt", 1)]
    assert all(info.updated_at.tzinfo is not None for info in sources)

    assert kb.delete_source(client_id="shop", source="delivery.md") == 3
    assert kb.delete_source(client_id="shop", source="delivery.md") == 0
    assert [info.source for info in kb.list_sources(client_id="shop")] == ["notes.txt"]
    assert _headings("shop", "стоимость доставки") == [""]  # only notes.txt is left

    assert kb.delete_client(client_id="shop") == 1
    assert kb.list_sources(client_id="shop") == []
    assert [info.source for info in kb.list_sources(client_id="cafe")] == ["menu.txt"]


def test_a_client_never_sees_another_clients_chunks(empty_kb: None) -> None:
    secret = "Пароль от сейфа клиники: синий кит 4471, код доступа в серверную 9090."
    kb.ingest_text(client_id="clinic", source="internal.txt", text=secret, kind="text")
    kb.ingest_text(client_id="salon", source="faq.md", text=DELIVERY_MD, kind="markdown")

    for query in (secret, "пароль от сейфа", "синий кит 4471"):
        hits = kb.search(client_id="salon", query=query, limit=10)
        assert hits, "the salon's own chunks are still returned"
        assert all(hit.source == "faq.md" and "4471" not in hit.text for hit in hits)
        assert kb.knowledge_for(client_id="salon", query=query, limit=10).relevant == []
    assert kb.search(client_id="clinic", query="синий кит 4471", limit=1)[0].source == "internal.txt"
    assert kb.search(client_id="nobody", query=secret) == []


def test_searching_without_a_client_is_impossible(empty_kb: None) -> None:
    for client_id in ("", "   "):
        with pytest.raises(ValueError):
            kb.search(client_id=client_id, query="доставка")
        with pytest.raises(ValueError):
            qdrant.hybrid_search(
                collection="knowledge", client_id=client_id, dense=[0.1] * 384, sparse=([1], [1.0]), limit=3, prefetch_limit=5
            )


# --- quality on the fixture ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _salon_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture's knowledge ingested once for the module (the tests below only read it)."""
    folder = tmp_path_factory.mktemp("salon") / "qdrant"
    qdrant.configure(path=folder)
    try:
        report = kb.ingest_paths(client_id="zhibek", paths=[FIXTURE / "salon.md", FIXTURE / "faq.yaml"])
    finally:
        qdrant.configure(path=None)
    assert not report.failed
    return folder


@pytest.fixture
def salon_kb(_salon_store: Path) -> Iterator[None]:
    qdrant.configure(path=_salon_store)
    yield
    qdrant.configure(path=None)


def test_fixture_retrieval_quality_does_not_regress(salon_kb: None) -> None:
    questions = yaml.safe_load((FIXTURE / "questions.yaml").read_text(encoding="utf-8"))["questions"]
    ranks = []
    for question in questions:
        headings = _headings("zhibek", question["q"], 3)
        ranks.append(next((rank for rank, heading in enumerate(headings) if heading in question["expect"]), None))

    hit_at_1 = sum(rank == 0 for rank in ranks) / len(ranks)
    hit_at_3 = sum(rank is not None for rank in ranks) / len(ranks)
    assert hit_at_3 >= 0.94, hit_at_3  # 0.98 when written; see bench/retrieval_bench.py
    assert hit_at_1 >= 0.8, hit_at_1  # 0.84 when written (tune 0.81, held-out 0.89)


def test_judging_hits_applies_the_answer_floor_and_the_stricter_quoting_floor() -> None:
    def hit(score: float) -> kb.KnowledgeHit:
        return kb.KnowledgeHit(text=f"chunk {score}", score=score, source="faq.md", heading="", chunk_id=str(score))

    strict, floor = settings.kb_offline_min_score, settings.kb_min_score
    sure, likely, weak = hit(strict + 0.01), hit((strict + floor) / 2), hit(floor - 0.01)
    assert kb.judge([sure, likely, weak]) == kb.Knowledge(found=True, relevant=[sure, likely], quotable=sure)
    assert kb.judge([likely, weak]) == kb.Knowledge(found=True, relevant=[likely], quotable=None)
    assert kb.judge([weak]) == kb.Knowledge(found=True, relevant=[], quotable=None)  # a knowledge base with nothing relevant
    assert kb.judge([]) == kb.NOTHING


def test_threshold_keeps_answers_and_drops_off_topic(salon_kb: None) -> None:
    data = yaml.safe_load((FIXTURE / "questions.yaml").read_text(encoding="utf-8"))
    rejected = [q["q"] for q in data["off_topic"] if not kb.knowledge_for(client_id="zhibek", query=q["q"], limit=3).relevant]
    assert kb.knowledge_for(client_id="zhibek", query="рецепт бешбармака", limit=3).relevant == []
    assert len(rejected) >= 0.75 * len(data["off_topic"]), rejected

    kept = kb.knowledge_for(client_id="zhibek", query="сколько стоит маникюр с покрытием?", limit=3).relevant
    assert kept and kept[0].heading == "Цены > Маникюр и педикюр"
    assert all(hit.score >= settings.kb_min_score for hit in kept)


def test_only_confident_matches_are_quotable(salon_kb: None) -> None:
    def quotable(client_id: str, query: str) -> kb.KnowledgeHit | None:
        return kb.knowledge_for(client_id=client_id, query=query).quotable

    passage = quotable("zhibek", "сколько стоит маникюр с покрытием гель-лаком?")
    assert passage is not None and "8 000 тг" in passage.text
    assert passage.score >= settings.kb_offline_min_score > settings.kb_min_score
    for off_topic in ("рецепт бешбармака", "курс доллара на сегодня", "посоветуй сериал на вечер"):
        assert quotable("zhibek", off_topic) is None
    assert quotable("somebody-else", "сколько стоит маникюр с покрытием гель-лаком?") is None


def test_a_very_long_query_is_searched_by_its_tail_and_quickly(salon_kb: None) -> None:
    burst = "Здравствуйте, у меня к вам длинная история про мою подругу и её день рождения. " * 250
    started = time.monotonic()
    hits = kb.search(client_id="zhibek", query=burst + "Короче, сколько стоит маникюр с покрытием гель-лаком?", limit=1)
    assert time.monotonic() - started < 5  # the whole 20 000 characters took 8 s to embed
    assert hits[0].heading == "Цены > Маникюр и педикюр"


def test_in_process_index_ranks_exactly_like_qdrant(salon_kb: None, monkeypatch: pytest.MonkeyPatch) -> None:
    questions = yaml.safe_load((FIXTURE / "questions.yaml").read_text(encoding="utf-8"))["questions"][::2]

    def ranking(cached: bool) -> list[list[tuple[str, float]]]:
        monkeypatch.setattr(settings, "kb_search_cache", cached)
        return [[(hit.chunk_id, hit.score) for hit in kb.search(client_id="zhibek", query=q["q"], limit=5)] for q in questions]

    through_qdrant = ranking(cached=False)
    assert qdrant.cached_tenants() == 0
    in_process = ranking(cached=True)
    assert qdrant.cached_tenants() == 1

    assert [[chunk for chunk, _ in hits] for hits in in_process] == [[chunk for chunk, _ in hits] for hits in through_qdrant]
    for ours, theirs in zip(in_process, through_qdrant, strict=True):
        assert [score for _, score in ours] == pytest.approx([score for _, score in theirs], abs=1e-3)


def test_a_shared_collection_is_still_filtered_by_tenant(empty_kb: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # A Qdrant server keeps every tenant in one collection: both search paths must filter on client_id.
    embedder = embeddings.get_embedder()
    qdrant.ensure_collection(collection="shared", dense_dim=embedder.dim)
    texts = {"clinic": "Пароль от сейфа клиники: синий кит 4471.", "salon": "Маникюр с покрытием стоит 8 000 тенге."}
    points = []
    for client_id, text in texts.items():
        vector = embedder.embed_documents([text])[0]
        points.append(
            qdrant.ChunkPoint(
                id=kb.chunk_id(client_id=client_id, source="doc.txt", index=0),
                dense=vector,
                heading=vector,
                lines=[vector],
                sparse=embeddings.sparse_document(text),
                payload={"client_id": client_id, "source": "doc.txt", "text": text},
            )
        )
    qdrant.upsert(collection="shared", points=points)
    query = embedder.embed_query(texts["clinic"])
    sparse = embeddings.sparse_query(texts["clinic"])
    for cached in (True, False):
        monkeypatch.setattr(settings, "kb_search_cache", cached)
        hits = qdrant.hybrid_search(collection="shared", client_id="salon", dense=query, sparse=sparse, limit=10, prefetch_limit=10)
        assert [hit.payload["client_id"] for hit in hits] == ["salon"]
        own = qdrant.hybrid_search(collection="shared", client_id="clinic", dense=query, sparse=sparse, limit=10, prefetch_limit=10)
        assert [hit.payload["text"] for hit in own] == [texts["clinic"]]


def test_the_in_process_index_follows_every_write(empty_kb: None) -> None:
    kb.ingest_text(client_id="shop", source="notes.txt", text="Самовывоз бесплатный.", kind="text")
    assert "Самовывоз" in kb.search(client_id="shop", query="самовывоз", limit=1)[0].text
    assert qdrant.cached_tenants() == 1

    kb.ingest_text(client_id="shop", source="notes.txt", text="Доставка курьером 1 500 тенге.", kind="text")
    assert [hit.text for hit in kb.search(client_id="shop", query="самовывоз", limit=5)] == ["Доставка курьером 1 500 тенге."]
    kb.delete_source(client_id="shop", source="notes.txt")
    assert kb.search(client_id="shop", query="доставка", limit=5) == []


# --- failure modes ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_qdrant_server_fails_fast_with_a_logged_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    embeddings.get_embedder()  # loaded before timing: only Qdrant is measured
    monkeypatch.setattr(settings, "qdrant_url", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setattr(settings, "qdrant_timeout_seconds", 2.0)
    qdrant.configure(path=None)
    try:
        assert qdrant.ping() is False
        started = time.monotonic()
        with caplog.at_level(logging.ERROR), pytest.raises(ExternalServiceError) as raised:
            kb.knowledge_for(client_id="zhibek", query="доставка")
        elapsed = time.monotonic() - started
    finally:
        qdrant.close()

    assert raised.value.service == "qdrant" and raised.value.retryable
    assert elapsed < 5, elapsed
    failures = [record for record in caplog.records if record.getMessage() == "qdrant.call_failed"]
    assert failures and getattr(failures[-1], "service", None) == "qdrant"


def test_embedded_store_reports_healthy(empty_kb: None) -> None:
    assert qdrant.ping() is True


# --- OpenAI embeddings against a local fake of the API ----------------------------------------------


class _FakeEmbeddings(BaseHTTPRequestHandler):
    """POST /v1/embeddings like OpenAI: float or base64 vectors, and a scripted number of 500s first."""

    failures_left: ClassVar[int] = 0
    requests: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **request})
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            self._reply(500, {"error": {"message": "boom", "type": "server_error"}})
            return
        inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
        dims = request.get("dimensions", 8)
        data = []
        for index, text in enumerate(inputs):
            vector = [float(len(text) + index)] + [0.5] * (dims - 1)
            if request.get("encoding_format") == "base64":
                encoded: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            else:
                encoded = vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        self._reply(200, {"object": "list", "data": data, "model": request["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_openai(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_FakeEmbeddings]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeEmbeddings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeEmbeddings.failures_left = 0
    _FakeEmbeddings.requests = []
    monkeypatch.setattr(settings, "openai_base_url", f"http://127.0.0.1:{server.server_address[1]}/v1")
    monkeypatch.setattr(settings, "openai_api_key", SecretStr("sk-test-local"))
    monkeypatch.setattr(settings, "embedding_model", "text-embedding-3-small")
    monkeypatch.setattr(settings, "embedding_dimensions", 8)
    yield _FakeEmbeddings
    server.shutdown()
    server.server_close()


def test_openai_embedder_talks_to_the_api_and_retries(fake_openai: type[_FakeEmbeddings]) -> None:
    embedder = embeddings.OpenAIEmbedder()
    fake_openai.failures_left = 1

    vectors = embedder.embed_documents(["a", "bbb"])
    query = embedder.embed_query("cc")

    assert embedder.dim == 8 and embedder.name == "openai-text-embedding-3-small-8"
    assert [vector[0] for vector in vectors] == [1.0, 4.0] and len(query) == 8
    assert len(fake_openai.requests) == 3  # one 500, then two successes
    assert {request["path"] for request in fake_openai.requests} == {"/v1/embeddings"}
    assert fake_openai.requests[-1]["auth"] == "Bearer sk-test-local"
    assert fake_openai.requests[-1]["dimensions"] == 8


def test_openai_embedder_gives_up_with_external_service_error(fake_openai: type[_FakeEmbeddings]) -> None:
    embedder = embeddings.OpenAIEmbedder()
    fake_openai.failures_left = 10

    with pytest.raises(ExternalServiceError) as raised:
        embedder.embed_query("привет")

    assert raised.value.service == "openai" and raised.value.retryable
    assert len(fake_openai.requests) == 3
