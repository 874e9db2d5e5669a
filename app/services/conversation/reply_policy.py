"""What the bot does with a customer's turn. Pure: the turn (turn.py) gathers the facts, the intent and the
knowledge, calls the language model when told to, and applies the decision; nothing here does I/O.

route() decides who handles the turn; the first row that matches wins:

| the turn                                                     | decision                                             |
|--------------------------------------------------------------|------------------------------------------------------|
| nothing to read (a reaction, an empty message)               | forward to the open handover, else store             |
| no words: files, stickers, a voice note not recognised       | forward / store while a handover is open or the bot  |
| (or not listened to: the transcription budget is spent)      | is muted; else ask to write (voice) or thank (file)  |
| a handover is open                                           | "stop" while it is pending: opt out; else forward    |
| the bot is muted                                             | a request for a human: escalate; else store          |
| "stop writing to me"                                         | opt out                                              |
| a request for a human, frustration                           | escalate, with the acknowledgement                   |
| anything else                                                | None: the bot answers (answer())                     |

answer() is honest when it does not know: a question the client's knowledge base has nothing relevant for
gets the no-knowledge reply (and, per client, a manager). Without a language model a greeting is greeted
and a confident knowledge match quoted; a model that fails hands the customer to a manager.
"""

from dataclasses import dataclass
from enum import StrEnum

from app.models import HandoverReason, HandoverStatus
from app.services import replies
from app.services.conversation.intent import ESCALATE_INTENTS, Intent, IntentResult, IntentSource
from app.services.knowledge.kb import Knowledge, KnowledgeHit
from app.services.operations.limits import Limit
from app.utils.text import split_text

QUOTE_CHARS = 1000


class Action(StrEnum):
    ANSWER = "answer"  # send `text` to the customer
    ESCALATE = "escalate"  # open a handover (`reason`) and send `text`
    FORWARD = "forward"  # the turn goes to the manager's Telegram topic
    OPT_OUT = "opt_out"  # the bot steps back (muted, a pending handover cancelled) and says `text`
    STORE = "store"  # keep the messages, say nothing


@dataclass(frozen=True)
class TurnFacts:
    """What the policy needs to know about a turn."""

    readable: bool  # anything for a person to read: words, or a note about a file or a failed voice note
    words: bool  # the customer wrote or said something (voice notes transcribed)
    voice_failed_only: bool
    attachments_only: bool
    handover: HandoverStatus | None  # the open handover's status
    bot_muted: bool
    escalate_on_no_knowledge: bool  # the client's setting
    voice_skipped: bool = False  # a voice note was not transcribed: the client's transcription budget is spent


@dataclass(frozen=True)
class Decision:
    """What the turn does. Decided outside any transaction (it may wait on the model), applied in one."""

    action: Action
    text: str | None = None  # what the customer is sent
    reason: HandoverReason | None = None  # why a handover is opened, for ESCALATE
    intent: Intent | None = None
    intent_source: IntentSource | None = None
    limit: Limit | None = None  # `text` tells the customer about this limit: at most once an hour (the turn sees to it)


@dataclass(frozen=True)
class AskModel:
    """Answer with the language model, grounded in these knowledge passages (best first); then model_answered()
    or model_failed() decide, or without_model() when the model turns out not to be configured."""

    knowledge: list[str]


def route(facts: TurnFacts, intent: IntentResult | None) -> Decision | None:
    """Who handles the turn (see the table above); None when the bot answers it. `intent` is None only
    for a turn without words."""
    if not facts.readable:
        return Decision(Action.FORWARD if facts.handover else Action.STORE)
    if not facts.words or intent is None:
        if facts.handover or facts.bot_muted:
            return Decision(Action.FORWARD if facts.handover else Action.STORE)
        if facts.voice_failed_only and facts.voice_skipped:
            return Decision(Action.ANSWER, text=replies.VOICE_UNAVAILABLE, limit=Limit.TRANSCRIPTION)
        if facts.voice_failed_only:
            return Decision(Action.ANSWER, text=replies.VOICE_NOT_RECOGNISED)
        if facts.attachments_only:
            return Decision(Action.ANSWER, text=replies.MEDIA_RECEIVED)
        return Decision(Action.STORE)
    if facts.handover is not None:
        if intent.intent == Intent.OPT_OUT and facts.handover == HandoverStatus.PENDING:
            return _decision(Action.OPT_OUT, intent, text=replies.OPT_OUT_ACK)
        return _decision(Action.FORWARD, intent)
    if facts.bot_muted:
        if intent.intent == Intent.HUMAN_REQUEST:
            return _decision(Action.ESCALATE, intent, text=replies.HANDOVER_ACK, reason=HandoverReason.HUMAN_REQUEST)
        return _decision(Action.STORE, intent)
    if intent.intent == Intent.OPT_OUT:
        return _decision(Action.OPT_OUT, intent, text=replies.OPT_OUT_ACK)
    if intent.intent in ESCALATE_INTENTS:
        frustrated = intent.intent == Intent.FRUSTRATION
        ack = replies.HANDOVER_ACK_FRUSTRATION if frustrated else replies.HANDOVER_ACK
        reason = HandoverReason.FRUSTRATION if frustrated else HandoverReason.HUMAN_REQUEST
        return _decision(Action.ESCALATE, intent, text=ack, reason=reason)
    return None


def answer(facts: TurnFacts, intent: IntentResult, knowledge: Knowledge, *, model_configured: bool) -> Decision | AskModel:
    """The bot's own answer: from the model grounded in the relevant knowledge, or honestly none."""
    if not model_configured:
        return without_model(facts, intent, knowledge)
    if intent.intent == Intent.QUESTION and knowledge.found and not knowledge.relevant:
        return _no_knowledge(facts, intent)
    return AskModel([hit.text for hit in knowledge.relevant])


def without_model(facts: TurnFacts, intent: IntentResult, knowledge: Knowledge) -> Decision:
    """No language model: greet, or quote the knowledge passage when it is a confident match."""
    if intent.intent == Intent.GREETING:
        return _decision(Action.ANSWER, intent, text=replies.GREETING)
    if knowledge.quotable is not None:
        return _decision(Action.ANSWER, intent, text=_quote(knowledge.quotable))
    return _no_knowledge(facts, intent)


def model_answered(intent: IntentResult, text: str) -> Decision:
    return _decision(Action.ANSWER, intent, text=text)


def model_failed(intent: IntentResult) -> Decision:
    """The model failed after its retry: an honest apology, and a manager."""
    return _decision(Action.ESCALATE, intent, text=replies.FALLBACK_RESPONSES["ai_error"], reason=HandoverReason.AI_ERROR)


def flooded(limit: Limit) -> Decision:
    """The customer went over a per-phone rate limit: the turn is stored, and they are asked to slow down."""
    return Decision(Action.ANSWER, text=replies.RATE_LIMITED, limit=limit)


def escalations_spent(decision: Decision) -> Decision:
    """A new handover would go over the customer's daily escalations: managers are not called again."""
    return Decision(
        Action.ANSWER,
        text=replies.ESCALATION_LIMITED,
        intent=decision.intent,
        intent_source=decision.intent_source,
        limit=Limit.ESCALATIONS,
    )


def told_already(decision: Decision) -> Decision:
    """A limit's notice the customer has had in this window: keep the messages, say nothing."""
    return Decision(Action.STORE, intent=decision.intent, intent_source=decision.intent_source)


def manager_stepped_in(decision: Decision) -> Decision:
    """A handover opened while the turn was being decided: the bot keeps quiet and the turn goes to the manager."""
    if decision.action in (Action.ANSWER, Action.ESCALATE, Action.STORE):
        return Decision(Action.FORWARD, intent=decision.intent, intent_source=decision.intent_source)
    return decision


def _no_knowledge(facts: TurnFacts, intent: IntentResult) -> Decision:
    text = replies.FALLBACK_RESPONSES["no_knowledge"]
    if facts.escalate_on_no_knowledge:
        return _decision(Action.ESCALATE, intent, text=text, reason=HandoverReason.NO_KNOWLEDGE)
    return _decision(Action.ANSWER, intent, text=text)


def _quote(hit: KnowledgeHit) -> str:
    """A chunk as an answer: without its heading path line, at most about QUOTE_CHARS characters."""
    body = hit.text
    if hit.heading and body.startswith(hit.heading):
        body = body[len(hit.heading) :].lstrip(" :\n")
    return split_text(body or hit.text, QUOTE_CHARS)[0]


def _decision(action: Action, intent: IntentResult, *, text: str | None = None, reason: HandoverReason | None = None) -> Decision:
    return Decision(action, text=text, reason=reason, intent=intent.intent, intent_source=intent.source)
