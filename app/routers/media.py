from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.services.channels import media_store

router = APIRouter(tags=["media"])


@router.api_route("/media/{token}", methods=["GET", "HEAD"], include_in_schema=False)
def media(token: str) -> FileResponse:
    """A file the WhatsApp gateway downloads (a manager's photo, document, voice note); 404 unless the token is known and unexpired."""
    found = media_store.open_file(token)
    return FileResponse(found.path, media_type=found.content_type, filename=found.filename)
