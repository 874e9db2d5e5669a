from fastapi import APIRouter, Response

from app.schemas.health import Health
from app.services.operations.health import readiness

router = APIRouter(tags=["health"])


@router.get("/health/live")
def live() -> dict[str, str]:
    """The process answers requests. No I/O: for a liveness probe (and the container's healthcheck)."""
    return {"status": Health.OK}


@router.get("/health")
@router.get("/health/ready")
def ready(response: Response) -> dict[str, object]:
    """Database, Redis and Qdrant status (checked at most every HEALTH_CACHE_SECONDS); 503 when the database is
    down, since then nothing works."""
    result = readiness()
    if result["db"] != Health.OK:
        response.status_code = 503
    return result
