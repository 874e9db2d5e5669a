"""The intent classes the service acts on, and the corpus's languages, topics and splits."""

from enum import StrEnum

from app.intents.deps import Intent as Intent

INTENTS: tuple[Intent, ...] = tuple(Intent)
ESCALATE: frozenset[Intent] = frozenset({Intent.HUMAN_REQUEST, Intent.FRUSTRATION})
# Classes that make the service do something other than answer: a manager, or silence.
ACTIONS: frozenset[Intent] = ESCALATE | {Intent.OPT_OUT}


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
