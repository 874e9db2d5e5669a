"""What the bot does with a customer's turn. Pure: the turn (turn.py) gathers the facts, the intent and the
knowledge, calls the language model when told to, and applies the decision; nothing here does I/O.

route() decides who handles the turn; the first row that matches wins:

| the turn                                                     | decision                                             |
|--------------------------------------------------------------|------------------------------------------------------|
| nothing to read (a reaction, an empty message)               | forward to the open handover, else store             |
| no words: files, stickers, a voice note not recognised       | forward / store while a handover is open or the bot  |
| (or not listened to: the transcription budget is spent)      | is muted; else ask to write (voice) or thank (file)  |
| a handover is open                                           | "stop" while it is pending: opt out; else forward,   |
|                                                              | with the waiting notice when due (below)             |
| the bot is muted                                             | a request for a human: escalate; else store          |
| "да" / "нет" to the bot's offer of a manager                 | escalate / "хорошо" (before "stop": "не надо" here   |
|                                                              | declines the offer, not the conversation)            |
| "stop writing to me"                                         | opt out                                              |
| a request for a human, frustration                           | escalate, with the acknowledgement                   |
| a sensitive topic (the client's list and policy)             | escalate (reason sensitive)                          |
| anything else                                                | None: the bot answers (answer())                     |

The waiting notice: a customer who writes while nobody has answered yet (pending, or taken without a
reply) hears the client's `waiting_notice_text` (out of hours: when a manager answers), at most once per
`waiting_notice_minutes` counted from the last thing they were told (the acknowledgement included), never
once a manager has replied.

answer() is honest when it does not know: a question the client's knowledge base has nothing relevant for
follows the client's `no_knowledge_policy`: `escalate` calls a manager; `clarify_then_offer` asks one
clarifying question, and if the next turn still finds nothing offers a manager ("да"/"нет"). Without a
language model a greeting is greeted and a confident knowledge match quoted (never a passage that reads
like an internal rule); a model that fails hands the customer to a manager. The model's own judgement
(model_answered) can hand the turn over too, and an answer of its that touches a sensitive topic or repeats
the business's policy is replaced by a handover. Out of business hours every acknowledgement says when a
manager answers instead of "soon". A client whose managers cannot be told (no Telegram group or bot yet)
never has a handover promised: the customer hears that no manager can be reached here, no manager is offered,
and the operator is alerted.
"""

from dataclasses import dataclass, field, replace
from enum import StrEnum

from app.intents.labels import ESCALATE, Intent, IntentResult, IntentSource
from app.intents.rules import normalise
from app.models import HandoverReason, HandoverStatus
from app.schemas.client import ClientSettings, NoKnowledgePolicy
from app.services import replies
from app.services.conversation import sensitive
from app.services.conversation.assistant import Handoff, ModelAnswer
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


class BotStep(StrEnum):
    """What a message of the bot was (stored as its reason): the next turn reads the last one."""

    CLARIFY = "no_knowledge_clarify"  # asked to clarify a question the knowledge base had nothing for
    OFFER = "offer_manager"  # offered a manager, waiting for "да" or "нет"
    WAITING_NOTICE = "waiting_notice"  # told a waiting customer a manager will answer
    BOOKING = "booking"  # a step of a booking request (a question, the request sent, the outcome)


@dataclass(frozen=True)
class TurnFacts:
    """What the policy needs to know about a turn."""

    readable: bool  # anything for a person to read: words, or a note about a file or a failed voice note
    words: bool  # the customer wrote or said something (voice notes transcribed)
    voice_failed_only: bool
    attachments_only: bool
    handover: HandoverStatus | None  # the open handover's status
    bot_muted: bool
    settings: ClientSettings = field(default_factory=ClientSettings)
    open_now: bool = True  # within the client's business hours
    opens: str | None = None  # when it opens next, as the customer is told ("завтра с 10:00")
    manager_replied: bool = False  # a manager has answered the customer in the open handover
    minutes_since_notice: float | None = None  # since the waiting customer was last told something
    last_step: BotStep | None = None  # what the bot's last message to the customer was
    answer_to_offer: bool | None = None  # "да" (True) or "нет" (False) after the bot offered a manager
    sensitive_topic: str | None = None  # the sensitive topic the customer's words touch (its label)
    guard: sensitive.Guard = sensitive.NO_GUARD  # the client's topics and policy, for the model's answer
    voice_skipped: bool = False  # a voice note was not transcribed: the client's transcription budget is spent
    managers_reachable: bool = True  # the client has a Telegram group and a bot: a manager can be told


@dataclass(frozen=True)
class Decision:
    """What the turn does. Decided outside any transaction (it may wait on the model), applied in one."""

    action: Action
    text: str | None = None  # what the customer is sent
    reason: HandoverReason | None = None  # why a handover is opened, for ESCALATE
    detail: str | None = None  # more about the reason (the sensitive topic, the model's words)
    step: BotStep | None = None  # what `text` is, when the next turn must know
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
        if facts.handover:
            return _forward(facts)
        if facts.bot_muted:
            return Decision(Action.STORE)
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
        return _forward(facts, intent)
    if facts.bot_muted:
        if intent.intent == Intent.HUMAN_REQUEST:
            return _escalate(facts, intent, HandoverReason.HUMAN_REQUEST, replies.HANDOVER_ACK)
        return _decision(Action.STORE, intent)
    if facts.answer_to_offer is not None:
        if facts.answer_to_offer:
            return _escalate(facts, intent, HandoverReason.NO_KNOWLEDGE, replies.HANDOVER_ACK)
        return _decision(Action.ANSWER, intent, text=replies.OFFER_DECLINED)
    if intent.intent == Intent.OPT_OUT:
        return _decision(Action.OPT_OUT, intent, text=replies.OPT_OUT_ACK)
    if intent.intent in ESCALATE:
        if intent.intent == Intent.FRUSTRATION:
            return _escalate(facts, intent, HandoverReason.FRUSTRATION, replies.HANDOVER_ACK_FRUSTRATION)
        return _escalate(facts, intent, HandoverReason.HUMAN_REQUEST, replies.HANDOVER_ACK)
    if facts.sensitive_topic:
        return _escalate(facts, intent, HandoverReason.SENSITIVE, replies.HANDOVER_ACK_SENSITIVE, detail=facts.sensitive_topic)
    return None


def _forward(facts: TurnFacts, intent: IntentResult | None = None) -> Decision:
    """The turn goes to the manager; a customer still waiting for a first answer hears the waiting notice when due."""
    text = step = None
    due = facts.minutes_since_notice is None or facts.minutes_since_notice >= facts.settings.waiting_notice_minutes
    if not facts.manager_replied and due:
        text = facts.settings.waiting_notice_text if facts.open_now else replies.WAITING_AFTER_HOURS.format(when=facts.opens)
        step = BotStep.WAITING_NOTICE
    if intent is None:
        return Decision(Action.FORWARD, text=text, step=step)
    return Decision(Action.FORWARD, text=text, step=step, intent=intent.intent, intent_source=intent.source)


def already_called(facts: TurnFacts) -> str:
    """What a customer who asks for a manager again, while one is called, hears."""
    return _hours(facts, replies.HANDOVER_ALREADY)


def answer(facts: TurnFacts, intent: IntentResult, knowledge: Knowledge, *, model_configured: bool) -> Decision | AskModel:
    """The bot's own answer: from the model grounded in the relevant knowledge, or honestly none."""
    if not model_configured:
        return without_model(facts, intent, knowledge)
    if intent.intent == Intent.QUESTION and knowledge.found and not knowledge.relevant:
        return _no_knowledge(facts, intent)
    return AskModel([hit.text for hit in knowledge.relevant])


def without_model(facts: TurnFacts, intent: IntentResult, knowledge: Knowledge) -> Decision:
    """No language model: greet, or quote the knowledge passage when it is a confident match (and not a rule
    for the staff that was loaded as knowledge by mistake)."""
    if intent.intent == Intent.GREETING:
        return _decision(Action.ANSWER, intent, text=replies.GREETING)
    if knowledge.quotable is not None and not sensitive.is_rule(knowledge.quotable.text):
        return _decision(Action.ANSWER, intent, text=_quote(knowledge.quotable))
    return _no_knowledge(facts, intent)


def model_answered(facts: TurnFacts, intent: IntentResult, answer: ModelAnswer) -> Decision:
    """The model's answer, or the handover it asked for; an answer touching a sensitive topic or repeating the
    business's policy is never sent: a person answers instead."""
    if answer.handoff == Handoff.HUMAN_REQUEST:
        return _escalate(facts, intent, HandoverReason.HUMAN_REQUEST, replies.HANDOVER_ACK, detail=answer.reason)
    if answer.handoff == Handoff.FRUSTRATION:
        return _escalate(facts, intent, HandoverReason.FRUSTRATION, replies.HANDOVER_ACK_FRUSTRATION, detail=answer.reason)
    if answer.handoff == Handoff.SENSITIVE:
        return _escalate(facts, intent, HandoverReason.SENSITIVE, replies.HANDOVER_ACK_SENSITIVE, detail=answer.reason)
    if answer.handoff == Handoff.NO_KNOWLEDGE or not answer.reply:
        return _no_knowledge(facts, intent)
    topic = sensitive.find_in_answer(answer.reply, facts.guard)
    if topic is not None or sensitive.leaks(answer.reply, facts.guard):
        detail = topic.label if topic else "ответ повторял внутренние правила"
        return _escalate(facts, intent, HandoverReason.SENSITIVE, replies.HANDOVER_ACK_SENSITIVE, detail=detail)
    return _decision(Action.ANSWER, intent, text=answer.reply)


def model_failed(facts: TurnFacts, intent: IntentResult) -> Decision:
    """The model failed after its retry: an honest apology, and a manager."""
    return _escalate(facts, intent, HandoverReason.AI_ERROR, replies.FALLBACK_RESPONSES["ai_error"])


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
    if facts.settings.no_knowledge_policy == NoKnowledgePolicy.ESCALATE:
        return _escalate(facts, intent, HandoverReason.NO_KNOWLEDGE, replies.FALLBACK_RESPONSES["no_knowledge"])
    if facts.last_step in (BotStep.CLARIFY, BotStep.OFFER):
        if not facts.managers_reachable:
            return replace(_decision(Action.ANSWER, intent, text=replies.NO_KNOWLEDGE_ALONE), reason=HandoverReason.NO_KNOWLEDGE)
        return _decision(Action.ANSWER, intent, text=replies.OFFER_MANAGER, step=BotStep.OFFER)
    return _decision(Action.ANSWER, intent, text=replies.CLARIFY, step=BotStep.CLARIFY)


def _wordset(words: str) -> frozenset[str]:
    return frozenset(normalise(word) for word in words.split())


_YES = _wordset(
    "да даа ага угу ок окей ok хорошо давайте давай конечно подключите подключайте соедините зовите пожалуйста "
    "плиз нужно надо хочу можно иә ия иа жарайды болады әрине керек қосыңыз yes"
)
_NO = _wordset("нет неа не надо нужно стоит хочу спасибо рахмет жоқ керек емес қажет сам сама no")
_YES_NO_FILLERS = _wordset("ну а так спасибо рахмет уж")


def yes_or_no(text: str) -> bool | None:
    """A short "да"/"иә"/"ок"/"давайте" (True) or "нет"/"не надо"/"жоқ" (False); None for anything else."""
    words = normalise(text).split()
    if not words or len(words) > 5:
        return None
    negative = any(w in ("нет", "неа", "не", "жок", "емес", "no") for w in words)
    if negative and all(w in _NO or w in _YES_NO_FILLERS for w in words):
        return False
    if not negative and all(w in _YES or w in _YES_NO_FILLERS for w in words) and any(w in _YES for w in words):
        return True
    return None


def _quote(hit: KnowledgeHit) -> str:
    """A chunk as an answer: without its heading path line, at most about QUOTE_CHARS characters."""
    body = hit.text
    if hit.heading and body.startswith(hit.heading):
        body = body[len(hit.heading) :].lstrip(" :\n")
    return split_text(body or hit.text, QUOTE_CHARS)[0]


NO_MANAGER_CHANNEL = "no_manager_channel"  # the detail of an escalation nobody could be told of


def _escalate(facts: TurnFacts, intent: IntentResult, reason: HandoverReason, text: str, *, detail: str | None = None) -> Decision:
    if not facts.managers_reachable:  # "передаю менеджеру" would be untrue: say so, and the turn tells the operator
        unreachable = Decision(Action.ANSWER, text=replies.NO_MANAGER, reason=reason, detail=NO_MANAGER_CHANNEL)
        return replace(unreachable, intent=intent.intent, intent_source=intent.source)
    return Decision(
        Action.ESCALATE, text=_hours(facts, text), reason=reason, detail=detail or None, intent=intent.intent, intent_source=intent.source
    )


def _hours(facts: TurnFacts, text: str) -> str:
    return replies.in_hours(text, open_now=facts.open_now, when=facts.opens)


def _decision(action: Action, intent: IntentResult, *, text: str | None = None, step: BotStep | None = None) -> Decision:
    return Decision(action, text=text, step=step, intent=intent.intent, intent_source=intent.source)
