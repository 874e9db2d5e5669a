"""The intent classes the service acts on, what decided a turn's intent, and the corpus's languages, topics
and splits."""

from dataclasses import dataclass
from enum import StrEnum

from app.models.intent import Intent as Intent

INTENTS: tuple[Intent, ...] = tuple(Intent)
ESCALATE: frozenset[Intent] = frozenset({Intent.HUMAN_REQUEST, Intent.FRUSTRATION})
# Classes that make the service do something other than answer: a manager, or silence.
ACTIONS: frozenset[Intent] = ESCALATE | {Intent.OPT_OUT}


class IntentSource(StrEnum):
    """What decided a turn's intent (the `decided_by` of `intent --json`, the `intent_source` of the turn's log)."""

    HEURISTIC = "heuristic"  # a strong rule
    MODEL = "model"  # the learned classifier's probabilities
    CLIENT_EXAMPLES = "client_examples"  # ...moved by the client's own labelled examples
    LLM = "llm"  # the language model, asked about what the others left unclear


@dataclass(frozen=True)
class IntentResult:
    intent: Intent
    confidence: float
    source: IntentSource = IntentSource.HEURISTIC


class Lang(StrEnum):
    RU = "ru"
    KK = "kk"
    MIXED = "mixed"
    TRANSLIT = "translit"


class Topic(StrEnum):
    SALON = "salon"
    CLINIC = "clinic"
    DENTAL = "dental"
    RESTAURANT = "restaurant"
    DELIVERY = "delivery"
    FITNESS = "fitness"
    AUTO = "auto"
    EDUCATION = "education"
    GENERAL = "general"


class Split(StrEnum):
    TRAIN = "train"
    TEST = "test"
