from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.dependencies import require_metrics_token
from app.metrics import registry

# It names every client: bearer METRICS_TOKEN (503 while unset).
router = APIRouter(tags=["operator"], dependencies=[Depends(require_metrics_token)])


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    """Prometheus exposition of this process's metrics."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
