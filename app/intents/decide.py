"""Rules and model combined into one decision, as a pure function (no I/O, no global state).

1. A strong rule wins (an explicit "позовите менеджера", "не пишите мне"), unless the message quotes
   someone (the rule may have fired on the quote), the model is nearly sure the rule is wrong, or one of
   the client's own examples, nearly the same message, says otherwise.
2. Otherwise the model's probabilities, moved by the client's nearest examples: escalate (human_request
   or frustration) when their sum reaches its threshold, opt_out when its probability does, else the
   likeliest of the classes that are simply answered.
3. Unclear when that answer is not likely enough, or an escalation or opt-out is plausible but below its
   threshold: a language model, when one is configured, should decide. Without one the decision stands.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.intents.labels import ESCALATE, INTENTS, Intent, IntentResult, IntentSource


@dataclass(frozen=True)
class Thresholds:
    """Chosen by cross-validation on the training split (see train.py), stored in the model file."""

    rule: Mapping[Intent, float]  # a rule result of this class at or above this confidence wins outright...
    rule_veto: float  # ...unless the model gives that class (for an escalation: either escalate class) less than this
    escalate: float  # p(human_request) + p(frustration)
    opt_out: float
    escalate_unclear: float  # from here up to `escalate`: ask a language model
    opt_out_unclear: float
    settled: float  # an answered class below this probability is unclear
    client_floor: float = 0.92  # client examples less similar than this (cosine of e5 vectors) do not count
    client_strength: float = 3.0  # the vote of an identical client example, against the model's 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": {str(k): v for k, v in self.rule.items()},
            "rule_veto": self.rule_veto,
            "escalate": self.escalate,
            "opt_out": self.opt_out,
            "escalate_unclear": self.escalate_unclear,
            "opt_out_unclear": self.opt_out_unclear,
            "settled": self.settled,
            "client_floor": self.client_floor,
            "client_strength": self.client_strength,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Thresholds:
        values = dict(data)
        values["rule"] = {Intent(k): float(v) for k, v in data["rule"].items()}
        return cls(**values)


@dataclass(frozen=True)
class Neighbour:
    """One of the client's labelled examples and how similar it is to the turn (cosine of e5 embeddings)."""

    text: str
    label: Intent
    similarity: float


@dataclass(frozen=True)
class Decision:
    intent: Intent
    decided_by: IntentSource
    unclear: bool
    reason: str
    probabilities: Mapping[Intent, float]
    rule: IntentResult
    neighbours: Sequence[Neighbour] = field(default_factory=tuple)

    @property
    def escalate(self) -> bool:
        return self.intent in ESCALATE

    def result(self) -> IntentResult:
        """The decision as the turn carries it: the intent, how sure (the rule's confidence, or the probability
        that crossed its threshold) and what decided it."""
        if self.decided_by is IntentSource.HEURISTIC:
            return IntentResult(self.intent, self.rule.confidence, self.decided_by)
        classes = ESCALATE if self.escalate else {self.intent}
        return IntentResult(self.intent, sum(self.probabilities.get(i, 0.0) for i in classes), self.decided_by)

    def as_dict(self) -> dict[str, Any]:
        """For `intent --json`: the decision, which path took it and why, the rule and the probabilities."""
        return {
            "intent": str(self.intent),
            "escalate": self.escalate,
            "decided_by": str(self.decided_by),
            "unclear": self.unclear,
            "reason": self.reason,
            "rule": {"intent": self.rule.intent, "confidence": round(self.rule.confidence, 3)},
            "probabilities": {str(k): round(v, 4) for k, v in sorted(self.probabilities.items(), key=lambda kv: -kv[1])},
            "neighbours": [{"text": n.text, "label": str(n.label), "similarity": round(n.similarity, 4)} for n in self.neighbours],
        }


# A quotation of three characters or more: «...», "...", “...”, „...“
_QUOTE = re.compile(r"[«\"“„][^«»\"“”„]{3,}[»\"”“]")


def quotes(text: str) -> bool:
    """Whether the message quotes someone (a rule's cue may be inside the quote)."""
    return bool(_QUOTE.search(text))


def _vote(neighbours: Sequence[Neighbour], thresholds: Thresholds) -> dict[Intent, float]:
    """Each example above the similarity floor votes for its label, more the more similar it is."""
    votes: dict[Intent, float] = {}
    span = max(1e-6, 1.0 - thresholds.client_floor)
    for neighbour in neighbours:
        weight = (neighbour.similarity - thresholds.client_floor) / span * thresholds.client_strength
        if weight > 0:
            votes[neighbour.label] = votes.get(neighbour.label, 0.0) + min(weight, thresholds.client_strength)
    return votes


def _rule_is_strong(text: str, rule: Intent, confidence: float, probabilities: Mapping[Intent, float], thresholds: Thresholds) -> bool:
    minimum = thresholds.rule.get(rule)
    if minimum is None or confidence < minimum or quotes(text):
        return False
    agreeing = ESCALATE if rule in ESCALATE else {rule}
    return sum(probabilities.get(i, 0.0) for i in agreeing) >= thresholds.rule_veto


def decide(
    text: str,
    *,
    heuristic: IntentResult,
    probabilities: Mapping[Intent, float],
    thresholds: Thresholds,
    neighbours: Sequence[Neighbour] = (),
) -> Decision:
    """What to do with a turn, from its text, the rules' result, the model's probabilities and, optionally,
    the client's nearest labelled examples (see `ClientExamples.nearest`)."""
    votes = _vote(neighbours, thresholds)
    rule_intent = Intent(heuristic.intent) if heuristic.intent in INTENTS else None
    overruled = rule_intent is not None and any(label != rule_intent and v >= 1.0 for label, v in votes.items())

    def made(intent: Intent, by: IntentSource, reason: str, probs: Mapping[Intent, float], unclear: bool = False) -> Decision:
        return Decision(intent, by, unclear, reason, probs, heuristic, tuple(neighbours))

    if rule_intent is not None and not overruled and _rule_is_strong(text, rule_intent, heuristic.confidence, probabilities, thresholds):
        return made(rule_intent, IntentSource.HEURISTIC, f"rule {rule_intent} at {heuristic.confidence:.2f}", probabilities)

    total = 1.0 + sum(votes.values())
    probs = {intent: (probabilities.get(intent, 0.0) + votes.get(intent, 0.0)) / total for intent in INTENTS}
    by = IntentSource.CLIENT_EXAMPLES if votes else IntentSource.MODEL
    source = "model and client examples" if votes else "model"
    escalate = probs[Intent.HUMAN_REQUEST] + probs[Intent.FRUSTRATION]
    if escalate >= thresholds.escalate:
        intent = max(ESCALATE, key=probs.__getitem__)
        return made(intent, by, f"{source}: escalate {escalate:.2f} >= {thresholds.escalate:.2f}", probs)
    if probs[Intent.OPT_OUT] >= thresholds.opt_out:
        return made(Intent.OPT_OUT, by, f"{source}: opt_out {probs[Intent.OPT_OUT]:.2f} >= {thresholds.opt_out:.2f}", probs)
    answered = max((i for i in INTENTS if i not in ESCALATE and i != Intent.OPT_OUT), key=probs.__getitem__)
    doubts = []
    if escalate >= thresholds.escalate_unclear:
        doubts.append(f"escalate {escalate:.2f} >= {thresholds.escalate_unclear:.2f}")
    if probs[Intent.OPT_OUT] >= thresholds.opt_out_unclear:
        doubts.append(f"opt_out {probs[Intent.OPT_OUT]:.2f} >= {thresholds.opt_out_unclear:.2f}")
    if probs[answered] < thresholds.settled:
        doubts.append(f"{answered} only {probs[answered]:.2f}")
    if doubts:
        return made(answered, by, f"unclear ({', '.join(doubts)}): {source} says {answered}", probs, unclear=True)
    return made(answered, by, f"{source}: {answered} {probs[answered]:.2f}", probs)
