"""What /health reports: each dependency's state, and the service's as a whole."""

from enum import StrEnum


class Health(StrEnum):
    """A check's result (else "error: <what>"), and the overall status."""

    OK = "ok"
    DEGRADED = "degraded"  # a dependency failed: the service does what it still can
    NOT_CONFIGURED = "not_configured"


HEALTHY = frozenset({Health.OK, Health.NOT_CONFIGURED})
