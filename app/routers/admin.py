"""Operator API for a client's knowledge base (bearer ADMIN_TOKEN): upload, list, delete, search.

Thin: resolve the client, call the knowledge base (services/knowledge/kb.py), shape the answer. Uploads
are read (size-capped, known extensions only) by an async dependency, so the routes themselves stay `def`
and run in the threadpool. A knowledge base that cannot be reached answers 503 (the domain error handler).
"""

from dataclasses import dataclass
from typing import Annotated, get_args

from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from app.config import settings
from app.dependencies import ClientIdFromSlug, require_admin
from app.schemas import load_json
from app.schemas.kb import (
    MAX_SOURCE_CHARS,
    DocumentCreate,
    DocumentDeleted,
    DocumentIngested,
    DocumentRead,
    IngestReport,
    SearchHit,
    TextKind,
)
from app.services.knowledge import kb
from app.utils.errors import BadRequest, NotFound, PayloadTooLarge, ServiceUnavailable

router = APIRouter(prefix="/admin/clients/{slug}/kb", tags=["operator"], dependencies=[Depends(require_admin)])

_MAX_FILES = 20
_TEXT_KINDS: dict[str | None, TextKind] = {kind: kind for kind in get_args(TextKind)}


@dataclass(frozen=True)
class _Document:
    source: str
    data: bytes | None = None  # an uploaded file, parsed by its extension
    text: str | None = None  # JSON text of `kind`
    kind: TextKind = "text"


def _source_name(raw: str) -> str:
    # Keep a folder-relative name ("prices/2025.md") but never a path that climbs or starts at the root.
    parts = [part for part in raw.replace("\\", "/").split("/") if part not in ("", ".", "..")]
    name = "/".join(parts).strip()
    if not name:
        raise BadRequest("a document needs a file name")
    if len(name) > MAX_SOURCE_CHARS:
        raise BadRequest(f"file name longer than {MAX_SOURCE_CHARS} characters")
    return name


async def _read_documents(request: Request) -> list[_Document]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        try:
            document = DocumentCreate.model_validate(load_json(await request.body(), max_depth=settings.max_json_depth))
        except ValueError as exc:  # ValidationError, a body that is not JSON and one nested too deeply alike
            reason = "; ".join(error["msg"] for error in exc.errors()[:3]) if isinstance(exc, ValidationError) else str(exc)
            raise BadRequest(f"expected JSON {{source, text, kind}}: {reason}") from exc
        source = _source_name(document.source)
        inferred = _TEXT_KINDS.get(kb.kind_of(source), "text")  # a .pdf or .docx name sent as JSON text is text
        return [_Document(source=source, text=document.text, kind=document.kind or inferred)]
    if media_type != "multipart/form-data":
        raise BadRequest("send the documents as multipart/form-data files, or one as JSON {source, text, kind}")
    try:
        form = await request.form(max_files=_MAX_FILES, max_fields=_MAX_FILES)
    except AssertionError as exc:  # Starlette's word for "python-multipart is not installed"
        raise ServiceUnavailable("file uploads need the python-multipart package; send JSON instead") from exc
    uploads = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not uploads:
        raise BadRequest("no file in the upload")
    documents = []
    cap = settings.kb_upload_max_bytes
    for upload in uploads:
        source = _source_name(upload.filename or "")
        if kb.kind_of(source) is None:
            raise BadRequest(f"{source}: unsupported file type; supported: {', '.join(kb.supported_suffixes())}")
        data = await upload.read(cap + 1)
        if len(data) > cap:
            raise PayloadTooLarge(f"{source}: larger than {cap} bytes")
        documents.append(_Document(source=source, data=data))
    return documents


Documents = Annotated[list[_Document], Depends(_read_documents)]


@router.post("/documents")
def upload_documents(documents: Documents, client_id: ClientIdFromSlug) -> IngestReport:
    """Store or replace documents: multipart files (.md .txt .yaml .yml .json .pdf .docx) or JSON text."""
    # Parse everything first, so one unreadable file stores nothing rather than half of an upload.
    for document in documents:
        try:
            if document.data is not None:
                kb.load_bytes(document.source, document.data)
            else:
                kb.parse_document(document.text or "", document.kind)
        except ValueError as exc:
            raise BadRequest(f"{document.source}: {exc}") from exc
    results = []
    for document in documents:
        if document.data is not None:
            result = kb.ingest_bytes(client_id=client_id, source=document.source, data=document.data)
        else:
            result = kb.ingest_text(client_id=client_id, source=document.source, text=document.text or "", kind=document.kind)
        results.append(DocumentIngested(source=result.source, chunks=result.chunks, status=result.status, removed=result.removed))
    return IngestReport(documents=results, chunks=sum(result.chunks for result in results))


@router.get("/documents")
def list_documents(client_id: ClientIdFromSlug) -> list[DocumentRead]:
    """The client's documents with their chunk counts and last ingestion time."""
    sources = kb.list_sources(client_id=client_id)
    return [DocumentRead(source=info.source, chunks=info.chunks, updated_at=info.updated_at) for info in sources]


@router.delete("/documents/{source:path}")
def delete_document(slug: str, source: str, client_id: ClientIdFromSlug) -> DocumentDeleted:
    """Delete one document (404 if the client has no document of that name)."""
    deleted = kb.delete_source(client_id=client_id, source=source)
    if not deleted:
        raise NotFound(f"no document '{source}' for client '{slug}'")
    return DocumentDeleted(source=source, deleted=deleted)


@router.get("/search")
def search(
    client_id: ClientIdFromSlug,
    q: Annotated[str, Query(min_length=1, max_length=1000)],
    limit: Annotated[int, Query(ge=1, le=20)] = 5,
) -> list[SearchHit]:
    """The client's best-matching chunks for a query, best first, with their relevance scores."""
    hits = kb.search(client_id=client_id, query=q, limit=limit)
    return [SearchHit(text=hit.text, score=hit.score, source=hit.source, heading=hit.heading) for hit in hits]
