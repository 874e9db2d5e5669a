"""What became of a client's handovers over a period (`python -m app.cli report handovers`): how they ended,
how fast managers took them, who took and who skipped, what closed by itself."""

import math
import statistics
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select, true
from sqlalchemy.orm import Session

from app.models import Handover, HandoverAction, HandoverEvent, HandoverOutcome

_MANAGER_ACTIONS = (HandoverAction.TAKE, HandoverAction.SKIP, HandoverAction.REPLY, HandoverAction.RESOLVE, HandoverAction.RETURN)


@dataclass(frozen=True)
class ManagerRow:
    name: str
    takes: int = 0
    skips: int = 0
    replies: int = 0
    resolves: int = 0
    returns: int = 0


@dataclass(frozen=True)
class HandoverReport:
    since: datetime
    total: int
    by_outcome: dict[str, int]  # HandoverOutcome values, and "open" for those still pending or taken
    by_reason: dict[str, int]
    taken: int
    take_median_minutes: float | None
    take_p90_minutes: float | None
    managers: list[ManagerRow] = field(default_factory=list)

    @property
    def auto_closed(self) -> int:
        return self.by_outcome.get(HandoverOutcome.UNTAKEN, 0) + self.by_outcome.get(HandoverOutcome.SILENT, 0)


def handovers(session: Session, *, client_id: uuid.UUID, since: datetime, until: datetime | None = None) -> HandoverReport:
    """The handovers of a client opened since `since` (and before `until`)."""
    opened = (Handover.client_id == client_id, Handover.created_at >= since, Handover.created_at < until if until else true())
    rows = session.execute(select(Handover.outcome, Handover.reason, Handover.created_at, Handover.taken_at).where(*opened)).all()
    by_outcome: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    waits = []
    for outcome, reason, created_at, taken_at in rows:
        key = str(outcome) if outcome else "open"
        by_outcome[key] = by_outcome.get(key, 0) + 1
        by_reason[reason] = by_reason.get(reason, 0) + 1
        if taken_at is not None:
            waits.append((taken_at - created_at).total_seconds() / 60)
    counts = session.execute(
        select(HandoverEvent.actor_name, HandoverEvent.action, func.count())
        .join(Handover, Handover.id == HandoverEvent.handover_id)
        .where(*opened, HandoverEvent.action.in_(_MANAGER_ACTIONS))
        .group_by(HandoverEvent.actor_name, HandoverEvent.action)
    ).all()
    per_manager: dict[str, dict[str, int]] = {}
    for name, action, count in counts:
        per_manager.setdefault(name or "?", {})[action] = int(count)
    managers = [
        ManagerRow(
            name=name,
            takes=actions.get(HandoverAction.TAKE, 0),
            skips=actions.get(HandoverAction.SKIP, 0),
            replies=actions.get(HandoverAction.REPLY, 0),
            resolves=actions.get(HandoverAction.RESOLVE, 0),
            returns=actions.get(HandoverAction.RETURN, 0),
        )
        for name, actions in per_manager.items()
    ]
    managers.sort(key=lambda row: (-row.takes, row.name))
    return HandoverReport(
        since=since,
        total=len(rows),
        by_outcome=by_outcome,
        by_reason=by_reason,
        taken=len(waits),
        take_median_minutes=statistics.median(waits) if waits else None,
        take_p90_minutes=_percentile(sorted(waits), 0.9) if waits else None,
        managers=managers,
    )


def _percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value at least `share` of the values do not exceed."""
    return values[max(0, math.ceil(share * len(values)) - 1)]
