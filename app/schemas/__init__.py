"""Request and response models, and the bounded reading of a JSON body before it reaches one."""

import json
from typing import Annotated, Any

from pydantic import Field

# What PostgreSQL's BIGINT holds: every id a messenger sends is stored in one.
BigInt = Annotated[int, Field(ge=-(2**63), lt=2**63)]


class TooDeep(ValueError):
    pass


def load_json(body: bytes, *, max_depth: int) -> Any:
    """Parse a JSON body, refusing (ValueError) one that is not JSON or nests deeper than max_depth.

    The depth is checked here, before any model sees the data: validators (and strip_nul) recurse into it."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise TooDeep(f"JSON nested deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"body is not valid JSON: {type(exc).__name__}") from None
    check_depth(data, max_depth)
    return data


def check_depth(value: Any, max_depth: int) -> None:
    """TooDeep if containers nest deeper than max_depth; iterative, so the check itself cannot recurse."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise TooDeep(f"JSON nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def strip_nul(value: Any, _depth: int = 0) -> Any:
    """Remove NUL characters everywhere in a JSON value: PostgreSQL text and jsonb cannot store them.

    Bounded: a value nested deeper than any real payload is refused (ValueError: a 422), not recursed into."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if _depth > 64:
        raise TooDeep("JSON nested too deeply")
    if isinstance(value, dict):
        return {strip_nul(k, _depth + 1): strip_nul(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [strip_nul(v, _depth + 1) for v in value]
    return value
