"""Request and response models."""

from typing import Any


def strip_nul(value: Any) -> Any:
    """Remove NUL characters everywhere in a JSON value: PostgreSQL text and jsonb cannot store them."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {strip_nul(k): strip_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_nul(v) for v in value]
    return value
