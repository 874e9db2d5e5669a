"""Operator API for a client's knowledge base (bearer ADMIN_TOKEN): upload, list, delete, search.

Thin: resolve the client, call kb, shape the answer. Uploads are read (size-capped, known
extensions only) by an async dependency, so the routes themselves stay `def` and run in the threadpool.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from app.config import settings
from app.dependencies import DbSession, require_admin
from app.services import clients
from app.services.knowledge import kb
from app.utils.errors import BadRequest, ExternalServiceError, NotFound, PayloadTooLarge, ServiceUnavailable

router = APIRouter(prefix="/admin/clients/{slug}/kb", tags=["operator"], dependencies=[Depends(require_admin)])

_MAX_FILES = 20
_MAX_SOURCE_CHARS = 200


class DocumentIn(BaseModel):
    """A document sent as JSON text; `kind` defaults to what the source name's extension says, else text."""

    source: str = Field(min_length=1, max_length=_MAX_SOURCE_CHARS)
    text: str = Field(min_length=1)
    kind: Literal["markdown", "text", "faq"] | None = None


class DocumentRead(BaseModel):
    source: str
    chunks: int
    updated_at: datetime


class IngestResult(BaseModel):
    source: str
    chunks: int
    status: Literal["added", "replaced", "unchanged"]
    removed: int


class IngestReport(BaseModel):
    documents: list[IngestResult]
    chunks: int


class DeleteResult(BaseModel):
    source: str
    deleted: int


class SearchHit(BaseModel):
    text: str
    score: float
    source: str
    heading: str


@dataclass(frozen=True)
class _Document:
    source: str
    data: bytes | None = None  # an uploaded file, parsed by its extension
    text: str | None = None  # JSON text of `kind`
    kind: str = "text"


def _source_name(raw: str) -> str:
    # Keep a folder-relative name ("prices/2025.md") but never a path that climbs or starts at the root.
    parts = [part for part in raw.replace("\\", "/").split("/") if part not in ("", ".", "..")]
    name = "/".join(parts).strip()
    if not name:
        raise BadRequest("a document needs a file name")
    if len(name) > _MAX_SOURCE_CHARS:
        raise BadRequest(f"file name longer than {_MAX_SOURCE_CHARS} characters")
    return name


async def _read_documents(request: Request) -> list[_Document]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json":
        try:
            document = DocumentIn.model_validate(await request.json())
        except ValueError as exc:  # ValidationError and a body that is not JSON alike
            reason = "; ".join(error["msg"] for error in exc.errors()[:3]) if isinstance(exc, ValidationError) else "body is not JSON"
            raise BadRequest(f"expected JSON {{source, text, kind}}: {reason}") from exc
        source = _source_name(document.source)
        inferred = kb.kind_of(source)
        kind = document.kind or (inferred if inferred in ("markdown", "text", "faq") else "text")
        return [_Document(source=source, text=document.text, kind=kind)]
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


def _client_id(session: Session, slug: str) -> str:
    client_id = str(clients.get_by_slug(session, slug).id)
    # Embedding a document takes seconds: give the connection back to the pool before that work.
    session.close()
    return client_id


def _unavailable(exc: ExternalServiceError) -> ServiceUnavailable:
    return ServiceUnavailable(f"knowledge base unavailable ({exc.service}), retry later")


@router.post("/documents")
def upload_documents(slug: str, documents: Documents, session: DbSession) -> IngestReport:
    """Store or replace documents: multipart files (.md .txt .yaml .yml .json .pdf .docx) or JSON text."""
    client_id = _client_id(session, slug)
    # Parse everything first, so one unreadable file stores nothing rather than half of an upload.
    for document in documents:
        try:
            if document.data is not None:
                kb.load_bytes(document.source, document.data)
            else:
                kb.parse_document(document.text or "", document.kind)  # type: ignore[arg-type]
        except ValueError as exc:
            raise BadRequest(f"{document.source}: {exc}") from exc
    results = []
    try:
        for document in documents:
            if document.data is not None:
                result = kb.ingest_bytes(client_id=client_id, source=document.source, data=document.data)
            else:
                result = kb.ingest_text(client_id=client_id, source=document.source, text=document.text or "", kind=document.kind)  # type: ignore[arg-type]
            results.append(IngestResult(source=result.source, chunks=result.chunks, status=result.status, removed=result.removed))
    except ExternalServiceError as exc:
        raise _unavailable(exc) from exc
    return IngestReport(documents=results, chunks=sum(result.chunks for result in results))


@router.get("/documents")
def list_documents(slug: str, session: DbSession) -> list[DocumentRead]:
    """The client's documents with their chunk counts and last ingestion time."""
    client_id = _client_id(session, slug)
    try:
        sources = kb.list_sources(client_id=client_id)
    except ExternalServiceError as exc:
        raise _unavailable(exc) from exc
    return [DocumentRead(source=info.source, chunks=info.chunks, updated_at=info.updated_at) for info in sources]


@router.delete("/documents/{source:path}")
def delete_document(slug: str, source: str, session: DbSession) -> DeleteResult:
    """Delete one document (404 if the client has no document of that name)."""
    client_id = _client_id(session, slug)
    try:
        deleted = kb.delete_source(client_id=client_id, source=source)
    except ExternalServiceError as exc:
        raise _unavailable(exc) from exc
    if not deleted:
        raise NotFound(f"no document '{source}' for client '{slug}'")
    return DeleteResult(source=source, deleted=deleted)


@router.get("/search")
def search(
    slug: str,
    session: DbSession,
    q: Annotated[str, Query(min_length=1, max_length=1000)],
    limit: Annotated[int, Query(ge=1, le=20)] = 5,
) -> list[SearchHit]:
    """The client's best-matching chunks for a query, best first, with their relevance scores."""
    client_id = _client_id(session, slug)
    try:
        hits = kb.search(client_id=client_id, query=q, limit=limit)
    except ExternalServiceError as exc:
        raise _unavailable(exc) from exc
    return [SearchHit(text=hit.text, score=hit.score, source=hit.source, heading=hit.heading) for hit in hits]
