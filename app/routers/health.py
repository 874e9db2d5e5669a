from fastapi import APIRouter, Response

from app.services import health_service

router = APIRouter(tags=["health"])


@router.get("/health")
def health(response: Response) -> dict[str, object]:
    """Database, Redis and Qdrant status; 503 when the database is down, since then nothing works."""
    result = health_service.run_checks()
    if result["db"] != "ok":
        response.status_code = 503
    return result
