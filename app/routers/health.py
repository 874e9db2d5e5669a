from fastapi import APIRouter, Response

from app.schemas.health import Health
from app.services.operations.health import run_checks

router = APIRouter(tags=["health"])


@router.get("/health")
def health(response: Response) -> dict[str, object]:
    """Database, Redis and Qdrant status; 503 when the database is down, since then nothing works."""
    result = run_checks()
    if result["db"] != Health.OK:
        response.status_code = 503
    return result
