"""Prometheus metrics. Counters are per process; gauges that live in the database are read at scrape time."""

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from app import queue
from app.db import session_scope
from app.models import Client, Handover

logger = logging.getLogger(__name__)

registry = CollectorRegistry()

messages_received = Counter("truffles_messages_received", "Customer messages accepted by the webhook", ["client"], registry=registry)
duplicates = Counter("truffles_webhook_duplicates", "Webhook deliveries recognised as duplicates", ["client"], registry=registry)
turns = Counter("truffles_turns_processed", "Customer turns processed, by outcome", ["client", "outcome"], registry=registry)
ai_calls = Counter("truffles_ai_calls", "Language model calls", ["client", "purpose"], registry=registry)
ai_errors = Counter("truffles_ai_errors", "Language model calls that failed after their retry", ["client", "purpose"], registry=registry)
escalations = Counter("truffles_escalations", "Handovers opened", ["client", "reason"], registry=registry)
outbox_failed = Counter("truffles_outbox_failed", "Messages given up on after all retries", ["client", "channel"], registry=registry)
response_time = Histogram(
    "truffles_response_seconds",
    "From the customer's last message of a turn to the reply handed to WhatsApp",
    ["client"],
    buckets=(0.5, 1, 2, 3, 5, 8, 10, 15, 20, 30, 60),
    registry=registry,
)


class _DatabaseGauges(Collector):
    """Open handovers by status and the job-queue backlog, read when Prometheus scrapes."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        handovers = GaugeMetricFamily("truffles_handovers", "Handovers by status", labels=["client", "status"])
        try:
            with session_scope() as session:
                rows = session.execute(
                    select(Client.slug, Handover.status, func.count())
                    .join(Client, Client.id == Handover.client_id)
                    .group_by(Client.slug, Handover.status)
                ).all()
            for slug, status, count in rows:
                handovers.add_metric([slug, status], count)
        except Exception as exc:
            logger.warning("metrics.db_unavailable", extra={"error_type": type(exc).__name__})
        yield handovers
        backlog = GaugeMetricFamily("truffles_queue_backlog", "Jobs waiting on the queue, delayed ones included")
        try:
            backlog.add_metric([], queue.backlog())
        except Exception as exc:
            logger.warning("metrics.redis_unavailable", extra={"error_type": type(exc).__name__})
        yield backlog


registry.register(_DatabaseGauges())
