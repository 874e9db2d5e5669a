"""The operator's knowledge-base API (routers/admin.py): what it accepts and answers."""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

MAX_SOURCE_CHARS = 200
TextKind = Literal["markdown", "text", "faq"]


class DocumentCreate(BaseModel):
    """A document sent as JSON text; `kind` defaults to what the source name's extension says, else text."""

    source: str = Field(min_length=1, max_length=MAX_SOURCE_CHARS)
    text: str = Field(min_length=1)
    kind: TextKind | None = None


class DocumentRead(BaseModel):
    source: str
    chunks: int
    updated_at: datetime


class DocumentIngested(BaseModel):
    source: str
    chunks: int
    status: Literal["added", "replaced", "unchanged"]
    removed: int


class IngestReport(BaseModel):
    documents: list[DocumentIngested]
    chunks: int


class DocumentDeleted(BaseModel):
    source: str
    deleted: int


class SearchHit(BaseModel):
    text: str
    score: float
    source: str
    heading: str
