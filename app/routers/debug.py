from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from app.dependencies import DbSession, require_admin
from app.services.operations import debug

router = APIRouter(tags=["operator"], dependencies=[Depends(require_admin)])


@router.get("/debug/{phone}")
def debug_customer(phone: str, session: DbSession, client: Annotated[str | None, Query(max_length=63)] = None) -> dict[str, Any]:
    """A customer's conversation as the service sees it (bearer ADMIN_TOKEN)."""
    return debug.describe(session, phone=phone, client_slug=client)
