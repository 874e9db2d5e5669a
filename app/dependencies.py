"""FastAPI dependencies as Annotated aliases. Routers never build clients themselves."""

import hmac
from collections.abc import Iterator
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Header, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, SecretStr, ValidationError
from sqlalchemy.orm import Session

from app.config import settings
from app.db import session_scope
from app.schemas import load_json
from app.services import clients
from app.utils.errors import BadRequest, ConfigError, Unauthorized

M = TypeVar("M", bound=BaseModel)


def get_db() -> Iterator[Session]:
    with session_scope() as session:
        yield session


def get_client_id(slug: str) -> str:
    """The id of the client named by the path's `slug` (404 if unknown), from a session closed at once: the
    knowledge base's work that follows takes seconds and must not hold a database connection meanwhile."""
    with session_scope() as session:
        return str(clients.get_by_slug(session, slug).id)


async def _raw_body(request: Request) -> bytes:
    return await request.body()


DbSession = Annotated[Session, Depends(get_db)]
# The body unparsed (its size bounded by the middleware), for routes that authenticate before they parse.
RawBody = Annotated[bytes, Depends(_raw_body)]
ClientIdFromSlug = Annotated[str, Depends(get_client_id)]


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI `requestBody` of a route that reads its body itself (parse_body), the model's references
    inlined (they would point at the document's root otherwise)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        return [inline(item) for item in node] if isinstance(node, list) else node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


def parse_body(model: type[M], body: bytes) -> M:
    """A request body read into `model` only once it is known to be bounded JSON (size: the middleware; depth:
    load_json). Every refusal is a 422 with a readable reason, as for a body FastAPI validated itself."""
    try:
        return model.model_validate(load_json(body, max_depth=settings.max_json_depth))
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False, include_context=False, include_input=False)) from None
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _require_bearer(authorization: str | None, token: SecretStr | None, name: str) -> None:
    if token is None:
        raise ConfigError(f"{name} is not set: this endpoint is disabled")
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.get_secret_value().encode()):
        raise Unauthorized("missing or invalid bearer token")


def require_admin(authorization: Annotated[str | None, Header()] = None) -> None:
    """Operator endpoints: `Authorization: Bearer <ADMIN_TOKEN>`, compared in constant time."""
    _require_bearer(authorization, settings.admin_token, "ADMIN_TOKEN")


def require_metrics_token(authorization: Annotated[str | None, Header()] = None) -> None:
    """/metrics: `Authorization: Bearer <METRICS_TOKEN>` (what Prometheus' `authorization` scrape option sends)."""
    _require_bearer(authorization, settings.metrics_token, "METRICS_TOKEN")
