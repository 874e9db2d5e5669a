"""Intent classification: a labelled corpus, an offline model trained on it, and its combination with the
rules (see README.md in this folder). The turn calls `classify`; `decide` is the pure combination."""

from app.intents.classifier import classify
from app.intents.decide import Decision, Neighbour, Thresholds, decide
from app.intents.labels import ESCALATE, INTENTS, Intent, IntentResult, IntentSource
from app.intents.model import IntentModel, shipped
from app.intents.neighbours import ClientExamples, read_csv

__all__ = [
    "ESCALATE",
    "INTENTS",
    "ClientExamples",
    "Decision",
    "Intent",
    "IntentModel",
    "IntentResult",
    "IntentSource",
    "Neighbour",
    "Thresholds",
    "classify",
    "decide",
    "read_csv",
    "shipped",
]
