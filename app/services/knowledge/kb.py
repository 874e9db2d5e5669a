"""Knowledge base: load documents, chunk them by heading, ingest, list, delete and search per client.

`client_id` is the client's id as a string (`str(Client.id)`); every read and write is scoped to it.

Each chunk is stored with four vectors: a dense vector of its text (heading path + body), a dense vector
of its heading path embedded like a question, one dense vector per line/sentence of its body (a
multivector: a chunk scores by its best line, so one price in a long list still finds its chunk), and a
sparse lexical vector (BM25-like, IDF over the tenant). Candidates are the best chunks by text, by best
line and by sparse score, fused with RRF (Qdrant's own fusion on a server; the same lists and fusion
computed with numpy on the embedded store, see qdrant.py). The candidates are then ranked by

    score = TEXT_WEIGHT * cos(text) + HEADING_WEIGHT * cos(heading) + LINE_WEIGHT * cos(best line)
            + LEXICAL_WEIGHT * share of the query's words found in the chunk

`KnowledgeHit.score` is that score (about 0.75-1.0 with the bundled e5 model). `judge()` keeps the hits
reaching `settings.kb_min_score` for answers, and offers the best one for quoting without a language model
only when it reaches the stricter `settings.kb_offline_min_score`. The weights and both thresholds were
chosen on the `tune` half of bench/fixtures/kb/questions.yaml only (python -m bench.retrieval_bench reports tune and held-out apart).

Latency (python -m bench.retrieval_bench, 5 000 chunks, 2 cores): the query is embedded once (15-20 ms
with e5); on the embedded store the candidates come from numpy over the tenant's in-memory index (0.5 ms
for 500 chunks, 3 ms for 4 500): a search took 25-36 ms median in both shapes. The index is rebuilt
right after every write to the tenant (qdrant.warm, ~2.5 s for 4 500 chunks) and lazily on the
first search after a restart. On a server: one hybrid query plus one small batch for the cosines.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal
from xml.etree import ElementTree

import yaml

from app.config import settings
from app.services.knowledge import embeddings, qdrant
from app.services.knowledge.embeddings import Embedder

Kind = Literal["markdown", "text", "faq"]

_SUFFIX_KINDS: dict[str, str] = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".yaml": "faq",
    ".yml": "faq",
    ".json": "faq",
    ".pdf": "pdf",
    ".docx": "docx",
}
TEXT_WEIGHT = 0.3
HEADING_WEIGHT = 0.2
LINE_WEIGHT = 0.5
LEXICAL_WEIGHT = 0.04
_MIN_CANDIDATES = 20
_MAX_QUERY_CHARS = 500
_MIN_PREFETCH = 30
# Bump when what is stored per chunk changes: a new layout lives in a new collection (re-ingest).
_LAYOUT = "v2"
# Fixed namespace so a chunk slot keeps its id across runs and machines.
_ID_NAMESPACE = uuid.UUID("5b0c6f3e-6a51-4c1e-9d53-8f1f2a7d4b10")
HEADING_SEPARATOR = " > "


@dataclass(frozen=True)
class Section:
    """A heading path and the text under it (up to the next heading)."""

    path: tuple[str, ...]
    body: str

    @property
    def heading(self) -> str:
        return HEADING_SEPARATOR.join(self.path)


@dataclass(frozen=True)
class Chunk:
    """One retrievable piece: starts with its heading path, then (part of) the section's text."""

    index: int
    heading: str
    text: str


@dataclass(frozen=True)
class KnowledgeHit:
    """A retrieved chunk; `score` is its relevance to the query (see the module docstring)."""

    text: str
    score: float
    source: str
    heading: str
    chunk_id: str


@dataclass(frozen=True)
class SourceInfo:
    """A stored document of a client."""

    source: str
    chunks: int
    updated_at: datetime


@dataclass(frozen=True)
class SourceResult:
    """What ingesting one document did."""

    source: str
    chunks: int
    status: Literal["added", "replaced", "unchanged"]
    removed: int = 0


@dataclass
class IngestReport:
    """Outcome of `ingest_paths`: documents stored and files that could not be read."""

    sources: list[SourceResult] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def chunks(self) -> int:
        return sum(result.chunks for result in self.sources)


# --- loaders ------------------------------------------------------------------------------------

_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
Block = tuple[int | None, str]  # (heading level, text) or (None, a body line)


def _markdown_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = None if fenced else _MD_HEADING.match(line)
        blocks.append((len(match.group(1)), match.group(2).strip()) if match else (None, line))
    return blocks


def _sections_from_blocks(blocks: Sequence[Block]) -> list[Section]:
    levels = [level for level, _ in blocks if level is not None]
    # A single level-1 heading that opens a document with more headings is its title, not a section:
    # leave it out of every heading path so "Доставка > Стоимость" is not prefixed by the business name.
    title_level = 1 if len(levels) > 1 and levels[0] == 1 and levels.count(1) == 1 else None
    sections: list[Section] = []
    stack: list[tuple[int, str]] = []
    lines: list[str] = []

    def flush() -> None:
        body = "\n".join(lines).strip()
        if body:
            sections.append(Section(path=tuple(title for _, title in stack), body=body))
        lines.clear()

    title_seen = False
    for level, content in blocks:
        if level is None:
            lines.append(content)
            continue
        flush()
        if level == title_level and not title_seen:
            title_seen = True
            continue
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, content))
    flush()
    return sections


def _faq_pair(item: dict[str, Any]) -> tuple[str, str] | None:
    keys = {str(key).lower(): value for key, value in item.items()}
    for question_key, answer_key in (("question", "answer"), ("q", "a"), ("вопрос", "ответ")):
        if question_key in keys and answer_key in keys:
            return str(keys[question_key]).strip(), str(keys[answer_key]).strip()
    return None


# --- structured files (YAML / JSON) ---------------------------------------------------------------
# A business's own file loads as it is: {question, answer} items become Q&A sections; everything else
# becomes readable passages that keep each fact with its context (an item's name with its price and
# duration on one line; a section's title on each of its "key: value" lines), so a line embedded on its
# own (chunk_lines) still says what it is about.

STRUCTURED_MAX_BYTES = 1024 * 1024  # a business's YAML is a few KiB; parsing is pure Python
STRUCTURED_MAX_DEPTH = 16
_NAME_KEYS = ("name", "title", "название", "наименование", "имя", "service", "услуга", "атауы", "аты")
_SHORT = 200  # longer text (or several lines) gets a section or a line of its own
# Common English keys read as Russian words, so a Russian question finds them by word as well as by meaning.
_LABELS = {
    "name": "название",
    "price": "цена",
    "price_from": "цена от",
    "price_min": "цена от",
    "price_max": "цена до",
    "price_to": "цена до",
    "cost": "стоимость",
    "duration": "длительность",
    "duration_minutes": "длительность, мин",
    "minutes": "минут",
    "aliases": "также называют",
    "description": "описание",
    "address": "адрес",
    "city": "город",
    "street": "улица",
    "entrance": "вход",
    "floor": "этаж",
    "landmarks": "ориентиры",
    "parking": "парковка",
    "hours": "часы работы",
    "schedule": "график работы",
    "holidays": "праздничные дни",
    "rules": "условия",
    "conditions": "условия",
    "valid": "действует",
    "valid_until": "действует до",
    "discount": "скидка",
    "payment": "оплата",
    "policies": "правила",
    "policy": "правила",
    "services": "услуги",
    "prices": "цены",
    "promotions": "акции",
    "promo": "акции",
    "staff": "мастера",
    "masters": "мастера",
    "contacts": "контакты",
    "about": "о нас",
    "faq": "вопросы и ответы",
    "category": "категория",
    "role": "специализация",
    "note": "примечание",
    "notes": "примечания",
}


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, date, datetime))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "да" if value else "нет"
    return "" if value is None else str(value).strip()


def _label(key: Any) -> str:
    raw = _text(key)
    return _LABELS.get(raw.lower(), raw.replace("_", " "))


def _title(key: Any) -> str:
    label = _label(key)
    return label[:1].upper() + label[1:] if label != _text(key) else label


def _inline(value: Any) -> str | None:
    """A short value on one line ("5000 тг", "маникюр, ногти"), or None when it needs lines of its own."""
    if _scalar(value):
        text_ = _text(value)
        return text_ if len(text_) <= _SHORT and "\n" not in text_ else None
    if isinstance(value, list) and all(_scalar(item) for item in value):
        text_ = ", ".join(_text(item) for item in value if _text(item))
        return text_ if len(text_) <= _SHORT else None
    return None


def _item_name(data: dict[Any, Any]) -> tuple[Any, str] | None:
    for key, value in data.items():
        if str(key).strip().lower() in _NAME_KEYS and _scalar(value) and _text(value):
            return key, _text(value)
    return None


def _structured_sections(data: Any, path: tuple[str, ...] = (), depth: int = 0) -> list[Section]:
    if depth > STRUCTURED_MAX_DEPTH:
        raise ValueError(f"nested deeper than {STRUCTURED_MAX_DEPTH} levels")
    if isinstance(data, dict):
        pair = _faq_pair(data)
        if pair is not None:
            return [Section(path=(*path, pair[0]), body=pair[1])]
        return _mapping_sections(data, path, depth)
    if isinstance(data, list):
        loose = [line for item in data if (line := _loose_line(item))]
        sections = [Section(path=path, body="\n".join(loose))] if loose else []
        for item in data:
            if _loose_line(item) is None:
                sections.extend(_structured_sections(item, path, depth + 1))
        return sections
    text_ = _text(data)
    return [Section(path=path, body=text_)] if text_ else []


def _loose_line(item: Any) -> str | None:
    """A list item that is one line of its list: a scalar, or a sentence YAML read as a one-key mapping
    ("- Запись: в WhatsApp" is {"Запись": "в WhatsApp"})."""
    if _scalar(item):
        return _text(item) or None
    if isinstance(item, dict) and len(item) == 1:
        key, value = next(iter(item.items()))
        if _scalar(value) and _faq_pair(item) is None and not str(key).strip().endswith("?"):
            return f"{_text(key)}: {_text(value)}"
    return None


def _mapping_sections(data: dict[Any, Any], path: tuple[str, ...], depth: int) -> list[Section]:
    """A mapping: an item (it has a name) as one line "name — key: value, ..." under its own heading; any other
    mapping as "title — key: value" lines under its title; long texts, questions and nested parts apart."""
    named = _item_name(data) if depth else None  # the file's own name is not every section's heading
    if named is not None:
        path = (*path, named[1])
    context = named[1] if named else (path[-1] if path else "")
    parts: list[str] = []
    aliases: list[str] = []
    nested: list[Section] = []
    for key, value in data.items():
        if named is not None and key == named[0]:
            continue
        short = _inline(value)
        if short == "":
            continue
        if short is not None and isinstance(key, str) and key.strip().endswith("?"):
            nested.append(Section(path=(*path, key.strip()), body=short))  # "Принимаете Kaspi?": "Да"
        elif short is not None:
            part = f"{_label(key)}: {short}"
            # an item's name, price and duration first; the other names it goes by after them
            (aliases if _label(key) == _LABELS["aliases"] else parts).append(part)
        elif _scalar(value):
            nested.append(Section(path=(*path, _title(key)), body=_text(value)))
        else:
            nested.extend(_structured_sections(value, (*path, _title(key)), depth + 1))
    parts += aliases
    if named is not None:
        lines = [f"{named[1]} — {', '.join(parts)}" if parts else named[1]] if parts or not nested else []
    else:
        lines = [f"{context} — {part}" if context else part for part in parts]
    own = [Section(path=path, body="\n".join(lines))] if lines else []
    return own + nested


# A .docx is a zip: what it unpacks to is capped, whatever its headers claim (a few KiB can inflate to GiBs).
DOCX_MAX_UNPACKED_BYTES = 32 * 1024 * 1024


def _unpacked(archive: zipfile.ZipFile, name: str) -> bytes:
    with archive.open(name) as member:
        data = member.read(DOCX_MAX_UNPACKED_BYTES + 1)
    if len(data) > DOCX_MAX_UNPACKED_BYTES:
        raise ValueError(f"{name} unpacks to more than {DOCX_MAX_UNPACKED_BYTES // (1024 * 1024)} MiB")
    return data


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a FAQ never needs them, and a few aliases can stand for billions of nodes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted")
        return super().compose_node(parent, index)


def _docx_blocks(data: bytes) -> list[Block]:
    ns = {"w": "http://schemas.openxmlformats.org/wordprocessingml/2006/main"}
    w = "{" + ns["w"] + "}"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        document = ElementTree.fromstring(_unpacked(archive, "word/document.xml"))
        style_names: dict[str, str] = {}
        if "word/styles.xml" in archive.namelist():
            for style in ElementTree.fromstring(_unpacked(archive, "word/styles.xml")).iter(f"{w}style"):
                name = style.find("w:name", ns)
                if name is not None:
                    style_names[style.get(f"{w}styleId", "")] = name.get(f"{w}val", "").lower()
    blocks: list[Block] = []
    for paragraph in document.iter(f"{w}p"):
        text = "".join(
            node.text or "" if node.tag == f"{w}t" else (" " if node.tag == f"{w}tab" else "\n")
            for node in paragraph.iter()
            if node.tag in (f"{w}t", f"{w}tab", f"{w}br")
        ).strip()
        style_element = paragraph.find("w:pPr/w:pStyle", ns)
        style_id = style_element.get(f"{w}val", "") if style_element is not None else ""
        style_name = style_names.get(style_id, style_id).lower()
        match = re.match(r"(heading|заголовок)\s*(\d)", style_name)
        level = int(match.group(2)) if match else (1 if style_name == "title" else None)
        if level is not None and text:
            blocks.append((level, text))
        else:
            blocks.append((None, text))
    return blocks


def _pdf_text(data: bytes) -> str:
    try:
        from pypdf import PdfReader
    except ImportError as exc:  # optional dependency: only PDF ingestion needs it
        raise ValueError("PDF files need the pypdf package") from exc
    reader = PdfReader(io.BytesIO(data))
    return "\n\n".join((page.extract_text() or "").strip() for page in reader.pages)


def parse_document(text: str, kind: Kind) -> list[Section]:
    """Split a document's text into heading sections (FAQ entries become one section each; any other YAML/JSON
    becomes readable passages, see _structured_sections)."""
    if kind == "markdown":
        return _sections_from_blocks(_markdown_blocks(text))
    if kind == "faq":
        if len(text.encode("utf-8")) > STRUCTURED_MAX_BYTES:
            raise ValueError(f"a YAML/JSON file larger than {STRUCTURED_MAX_BYTES // 1024} KiB is not read: split it")
        try:
            data = yaml.load(text, Loader=_NoAliasLoader)
        except yaml.YAMLError as exc:
            raise ValueError(f"not valid YAML/JSON: {exc}") from exc
        except RecursionError:
            raise ValueError("not valid YAML/JSON: nested too deeply") from None
        return [section for section in _structured_sections(data) if section.body]
    if kind == "text":
        body = text.strip()
        return [Section(path=(), body=body)] if body else []
    raise ValueError(f"unknown document kind {kind!r}")


def kind_of(name: str) -> str | None:
    """The document kind a file name's extension maps to, or None if it is not supported."""
    return _SUFFIX_KINDS.get(Path(name).suffix.lower())


def supported_suffixes() -> list[str]:
    """File extensions ingestion accepts."""
    return sorted(_SUFFIX_KINDS)


def load_bytes(name: str, data: bytes) -> tuple[list[Section], str]:
    """A file's sections (by its extension) and the hash of its bytes; ValueError if unreadable."""
    kind = kind_of(name)
    if kind is None:
        raise ValueError(f"unsupported file type {Path(name).suffix or '(none)'}; supported: {', '.join(supported_suffixes())}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        if kind == "docx":
            return _sections_from_blocks(_docx_blocks(data)), digest
        if kind == "pdf":
            return parse_document(_pdf_text(data), "text"), digest
    except (zipfile.BadZipFile, ElementTree.ParseError, KeyError) as exc:
        raise ValueError(f"not a readable {kind.upper()} file") from exc
    except ValueError:
        raise
    except Exception as exc:  # pypdf raises its own errors for damaged files
        raise ValueError(f"not a readable {kind.upper()} file: {type(exc).__name__}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError("not UTF-8 text") from exc
    return parse_document(text, kind), digest  # type: ignore[arg-type]


def _load_file(path: Path) -> tuple[list[Section], str]:
    if kind_of(path.name) is None:
        raise ValueError(f"unsupported file type {path.suffix or '(none)'}")
    return load_bytes(path.name, path.read_bytes())


# --- chunking -----------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+(?=\S)")


def _units(body: str, budget: int) -> list[tuple[str, str]]:
    """Pieces no longer than `budget`, each with the separator that joins it to the previous one."""
    units: list[tuple[str, str]] = []
    for paragraph_index, paragraph in enumerate(re.split(r"\n\s*\n", body)):
        for line_index, line in enumerate(paragraph.splitlines()):
            line = line.strip()
            if not line:
                continue
            separator = "\n\n" if paragraph_index and line_index == 0 else "\n"
            for sentence in _SENTENCE_END.split(line) if len(line) > budget else [line]:
                while len(sentence) > budget:  # a run-on sentence: cut at a word boundary
                    cut = sentence.rfind(" ", 0, budget)
                    cut = cut if cut > budget // 2 else budget
                    units.append((sentence[:cut].strip(), separator))
                    sentence, separator = sentence[cut:].strip(), " "
                if sentence:
                    units.append((sentence, separator))
                separator = " "
    return units


def chunk_sections(sections: Iterable[Section], *, target_chars: int, overlap_chars: int) -> list[Chunk]:
    """Pack each section's text into chunks of about `target_chars`, each prefixed by its heading path."""
    chunks: list[Chunk] = []
    for section in sections:
        heading = section.heading
        budget = max(200, target_chars - len(heading) - 1)
        current: list[tuple[str, str]] = []
        size = 0

        def emit(units: list[tuple[str, str]], heading: str = heading) -> None:
            body = "".join((separator if position else "") + text for position, (text, separator) in enumerate(units))
            chunks.append(Chunk(index=len(chunks), heading=heading, text=f"{heading}\n{body}" if heading else body))

        for unit in _units(section.body, budget):
            if current and size + len(unit[0]) + 1 > budget:
                emit(current)
                # Carry the tail of the previous chunk so a fact split across the boundary survives.
                carried: list[tuple[str, str]] = []
                carried_size = 0
                for previous in reversed(current):
                    if carried_size + len(previous[0]) > overlap_chars:
                        break
                    carried.insert(0, previous)
                    carried_size += len(previous[0]) + 1
                current, size = carried, carried_size
            current.append(unit)
            size += len(unit[0]) + 1
        if current:
            emit(current)
    return chunks


_LIST_MARK = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+")


def chunk_lines(chunk: Chunk) -> list[str]:
    """The chunk's body as lines and sentences (list markers dropped), each embedded on its own."""
    body = chunk.text.split("\n", 1)[1] if chunk.heading and "\n" in chunk.text else chunk.text
    lines: list[str] = []
    for line in body.splitlines():
        line = _LIST_MARK.sub("", line).strip()
        lines.extend(sentence for sentence in _SENTENCE_END.split(line) if sentence.strip())
    return list(dict.fromkeys(lines)) or [chunk.text]


# --- storage ------------------------------------------------------------------------------------


def collection_name(embedder: Embedder, client_id: str) -> str:
    """Where a client's chunks live: one collection per embedder (vector spaces never mix); in the
    embedded store also one per client, because local mode scores every point of a collection in
    Python and would otherwise slow each tenant down by all the others. The client_id filter applies
    either way."""
    name = f"{settings.qdrant_collection}_{embedder.name}_{_LAYOUT}"
    if qdrant.is_local():
        digest = hashlib.blake2b(client_id.encode(), digest_size=4).hexdigest()
        name = f"{name}_{client_id[:32]}_{digest}"
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)


def _ready(client_id: str) -> tuple[Embedder, str]:
    embedder = embeddings.get_embedder()
    collection = collection_name(embedder, client_id)
    qdrant.ensure_collection(collection=collection, dense_dim=embedder.dim)
    return embedder, collection


def _client_id(client_id: str) -> str:
    if not isinstance(client_id, str) or not client_id.strip():
        raise ValueError("client_id must be a non-empty string")
    return client_id


def chunk_id(*, client_id: str, source: str, index: int) -> str:
    """Stable point id of a chunk slot: re-ingesting a source overwrites its own slots."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{client_id}\x1f{source}\x1f{index}"))


def _embed_headings(embedder: Embedder, chunks: Sequence[Chunk]) -> list[list[float]]:
    # Embedded as queries: a heading reads like the question its section answers. A chunk without
    # a heading (plain text) stands in with its first line.
    titles = [chunk.heading or chunk.text.strip().splitlines()[0][:200] for chunk in chunks]
    unique = sorted(set(titles))
    vectors = dict(zip(unique, embedder.embed_queries(unique), strict=True))
    return [vectors[title] for title in titles]


def _embed_lines(embedder: Embedder, chunks: Sequence[Chunk]) -> list[list[list[float]]]:
    per_chunk = [chunk_lines(chunk) for chunk in chunks]
    unique = sorted({line for lines in per_chunk for line in lines})
    vectors = dict(zip(unique, embedder.embed_documents(unique), strict=True)) if unique else {}
    return [[vectors[line] for line in lines] for lines in per_chunk]


def _store(*, client_id: str, source: str, kind: str, sections: list[Section], source_hash: str) -> SourceResult:
    embedder, collection = _ready(client_id)
    existing = qdrant.payloads(collection=collection, client_id=client_id, fields=["source_hash"], source=source)
    chunks = chunk_sections(sections, target_chars=settings.kb_chunk_chars, overlap_chars=settings.kb_chunk_overlap_chars)
    if existing and len(existing) == len(chunks) and all(row.get("source_hash") == source_hash for row in existing):
        return SourceResult(source=source, chunks=len(chunks), status="unchanged")

    texts = [chunk.text for chunk in chunks]
    dense = embedder.embed_documents(texts) if texts else []
    headings = _embed_headings(embedder, chunks)
    lines = _embed_lines(embedder, chunks)
    now = datetime.now(UTC).isoformat()
    points = [
        qdrant.ChunkPoint(
            id=chunk_id(client_id=client_id, source=source, index=chunk.index),
            dense=vector,
            heading=heading,
            lines=chunk_vectors,
            sparse=embeddings.sparse_document(chunk.text),
            payload={
                "client_id": client_id,
                "source": source,
                "kind": kind,
                "chunk_index": chunk.index,
                "heading": chunk.heading,
                "text": chunk.text,
                "content_hash": hashlib.sha256(chunk.text.encode()).hexdigest()[:16],
                # lexical terms, stored so re-scoring a hit needs no tokenizing at query time
                "terms": sorted(set(embeddings.tokenize(chunk.text))),
                "source_hash": source_hash,
                "embedder": embedder.name,
                "updated_at": now,
            },
        )
        for chunk, vector, heading, chunk_vectors in zip(chunks, dense, headings, lines, strict=True)
    ]
    # Write the new version first, then drop the slots it no longer has: searches never see the
    # source missing, and a crash in between leaves at worst a few stale chunks for the next run.
    qdrant.upsert(collection=collection, points=points)
    removed = qdrant.delete(collection=collection, client_id=client_id, source=source, keep_ids=[point.id for point in points])
    qdrant.warm(collection=collection, client_id=client_id)
    status: Literal["added", "replaced"] = "replaced" if existing else "added"
    return SourceResult(source=source, chunks=len(points), status=status, removed=removed)


def ingest_text(*, client_id: str, source: str, text: str, kind: Kind) -> SourceResult:
    """Store (or replace) one document given as text under the name `source`."""
    source = source.strip()
    if not source:
        raise ValueError("source must be a non-empty name")
    sections = parse_document(text, kind)
    return _store(
        client_id=_client_id(client_id),
        source=source,
        kind=kind,
        sections=sections,
        source_hash=hashlib.sha256(text.encode()).hexdigest(),
    )


def expand_paths(paths: Sequence[Path | str]) -> list[tuple[Path, str]]:
    """Files to ingest with their source names: a file by its name, a folder's supported files by
    their path inside it."""
    files: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in _SUFFIX_KINDS:
                    files.append((child, child.relative_to(path).as_posix()))
        else:
            files.append((path, path.name))
    return files


def ingest_bytes(*, client_id: str, source: str, data: bytes) -> SourceResult:
    """Store (or replace) one uploaded file; its kind comes from the extension of `source`."""
    source = source.strip()
    if not source:
        raise ValueError("source must be a non-empty name")
    sections, digest = load_bytes(source, data)
    kind = _SUFFIX_KINDS[Path(source).suffix.lower()]
    return _store(client_id=_client_id(client_id), source=source, kind=kind, sections=sections, source_hash=digest)


def ingest_paths(*, client_id: str, paths: Sequence[Path | str]) -> IngestReport:
    """Store files (or every supported file under a folder); the source name is the file's name."""
    client_id = _client_id(client_id)
    report = IngestReport()
    for path, source in expand_paths(paths):
        try:
            sections, digest = _load_file(path)
        except (OSError, ValueError, zipfile.BadZipFile, ElementTree.ParseError, json.JSONDecodeError) as exc:
            report.failed[str(path)] = str(exc) or type(exc).__name__
            continue
        kind = _SUFFIX_KINDS[path.suffix.lower()]
        report.sources.append(_store(client_id=client_id, source=source, kind=kind, sections=sections, source_hash=digest))
    return report


def list_sources(*, client_id: str) -> list[SourceInfo]:
    """A client's documents with their chunk counts and last ingestion time."""
    _, collection = _ready(_client_id(client_id))
    rows = qdrant.payloads(collection=collection, client_id=client_id, fields=["source", "updated_at"])
    summary: dict[str, tuple[int, str]] = {}
    for row in rows:
        count, updated = summary.get(row["source"], (0, ""))
        summary[row["source"]] = (count + 1, max(updated, row.get("updated_at", "")))
    return [
        SourceInfo(source=source, chunks=count, updated_at=datetime.fromisoformat(updated))
        for source, (count, updated) in sorted(summary.items())
    ]


def delete_source(*, client_id: str, source: str) -> int:
    """Delete one document of a client; returns the number of chunks removed."""
    _, collection = _ready(_client_id(client_id))
    deleted = qdrant.delete(collection=collection, client_id=client_id, source=source)
    qdrant.warm(collection=collection, client_id=client_id)
    return deleted


def delete_client(*, client_id: str) -> int:
    """Delete every document of a client; returns the number of chunks removed."""
    _, collection = _ready(_client_id(client_id))
    return qdrant.delete(collection=collection, client_id=client_id)


def query_text(query: str) -> str:
    """The part of a customer's turn that is embedded for search (and for the intent model)."""
    # The embedder's cost grows with the text (20 000 characters took 8 s) and e5 reads 512 tokens at
    # most anyway. A customer's turn is a burst of messages whose question usually comes last: keep the tail.
    query = query.strip()
    if len(query) <= _MAX_QUERY_CHARS:
        return query
    tail = query[-_MAX_QUERY_CHARS:]
    return tail[tail.find(" ") + 1 :] if " " in tail else tail


# Query vectors computed ahead of the turn (see warm_query), by (embedder, query text). Small and bounded.
_QUERY_CACHE_SIZE = 512
_query_cache: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
_query_cache_lock = threading.Lock()


def _query_vector(embedder: Embedder, query: str) -> list[float]:
    key = (embedder.name, query)
    with _query_cache_lock:
        vector = _query_cache.get(key)
        if vector is not None:
            _query_cache.move_to_end(key)
            return vector
    vector = embedder.embed_query(query)
    with _query_cache_lock:
        _query_cache[key] = vector
        while len(_query_cache) > _QUERY_CACHE_SIZE:
            _query_cache.popitem(last=False)
    return vector


def searched_vector(query: str) -> tuple[str, list[float]] | None:
    """The vector a search of `query` computed in this process (with its embedder's name), if still held:
    never embeds, so a caller inside a transaction can keep it (an unanswered question, see gaps.py)."""
    name = embeddings.get_embedder().name
    with _query_cache_lock:
        vector = _query_cache.get((name, query_text(query)))
    return (name, vector) if vector is not None else None


def query_vector(query: str) -> list[float]:
    """The dense vector a search for this query uses, embedded once: the turn's intent classifier reads the
    same vector (with the e5 embedder), so a turn embeds its text once whichever asks first."""
    return _query_vector(embeddings.get_embedder(), query_text(query))


def warm_query(query: str) -> None:
    """Embed a query before it is searched (while a customer's turn waits for its last message), so the
    turn itself does not wait for the embedder. Harmless when the turn's text turns out different."""
    if query_text(query):
        query_vector(query)


def search(*, client_id: str, query: str, limit: int = 5) -> list[KnowledgeHit]:
    """Hybrid search within one client's knowledge, best first; `score` is the relevance (see above).

    Raises ExternalServiceError when Qdrant (or a remote embedder) fails after its retries."""
    client_id = _client_id(client_id)
    query = query_text(query)
    if not query or limit < 1:
        return []
    embedder, collection = _ready(client_id)
    candidates = qdrant.hybrid_search(
        collection=collection,
        client_id=client_id,
        dense=_query_vector(embedder, query),
        sparse=embeddings.sparse_query(query),
        limit=max(limit, _MIN_CANDIDATES),
        prefetch_limit=max(_MIN_PREFETCH, limit * 4),
    )
    scored = []
    for candidate in candidates:
        if candidate.payload.get("client_id") != client_id:  # the store filtered already; never trust one layer
            continue
        text = candidate.payload.get("text", "")
        terms = candidate.payload.get("terms")
        chunk_terms = set(terms) if isinstance(terms, list) else set(embeddings.tokenize(text))
        relevance = (
            TEXT_WEIGHT * candidate.dense_score
            + HEADING_WEIGHT * candidate.heading_score
            + LINE_WEIGHT * candidate.lines_score
            + LEXICAL_WEIGHT * embeddings.lexical_coverage(query, chunk_terms)
        )
        hit = KnowledgeHit(
            text=text,
            score=round(relevance, 4),
            source=candidate.payload.get("source", ""),
            heading=candidate.payload.get("heading", ""),
            chunk_id=candidate.id,
        )
        # RRF breaks exact ties only: the score alone orders, so `score` always explains the order.
        scored.append((relevance, candidate.fused_score, hit))
    scored.sort(key=lambda row: (row[0], row[1]), reverse=True)
    return [hit for _, _, hit in scored[:limit]]


@dataclass(frozen=True)
class Knowledge:
    """What an answer may rest on: a search's hits with the relevance floors applied (see judge)."""

    found: bool  # the search returned anything: the client has a knowledge base
    relevant: list[KnowledgeHit]  # hits reaching KB_MIN_SCORE, best first: the model's reference material
    quotable: KnowledgeHit | None  # the best hit if it reaches KB_OFFLINE_MIN_SCORE: quoted when there is no model


NOTHING = Knowledge(found=False, relevant=[], quotable=None)


def judge(hits: Sequence[KnowledgeHit]) -> Knowledge:
    """The one place the relevance floors apply. `relevant` keeps hits reaching `settings.kb_min_score`;
    `quotable` is the best of them when it reaches the stricter `settings.kb_offline_min_score`, chosen on
    the fixture's tune split so that no off-topic question passes and a passage quoted is almost always right."""
    relevant = [hit for hit in hits if hit.score >= settings.kb_min_score]
    quotable = relevant[0] if relevant and relevant[0].score >= settings.kb_offline_min_score else None
    return Knowledge(found=bool(hits), relevant=relevant, quotable=quotable)


def knowledge_for(*, client_id: str, query: str, limit: int = 3) -> Knowledge:
    """The client's knowledge for a customer's turn: `search`, judged.

    Raises ExternalServiceError when Qdrant fails, so the caller can answer without knowledge."""
    return judge(search(client_id=client_id, query=query, limit=limit))
