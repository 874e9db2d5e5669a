"""The reply policy on its own: what the bot does with a turn, from its facts, intent and knowledge (no I/O)."""

from dataclasses import replace

import pytest

from app.models import HandoverReason, HandoverStatus
from app.services import replies
from app.services.conversation import reply_policy
from app.services.conversation.intent import Intent, IntentResult, IntentSource
from app.services.conversation.reply_policy import Action, AskModel, Decision, TurnFacts
from app.services.knowledge.kb import NOTHING, Knowledge, KnowledgeHit

WORDS = TurnFacts(
    readable=True,
    words=True,
    voice_failed_only=False,
    attachments_only=False,
    handover=None,
    bot_muted=False,
    escalate_on_no_knowledge=True,
)
NO_WORDS = replace(WORDS, words=False)
QUESTION = IntentResult(Intent.QUESTION, 0.85)
PRICE = KnowledgeHit(
    text="Цены > Маникюр\nМаникюр с покрытием гель-лаком — 8 000 тг.",
    score=0.9,
    source="prices.md",
    heading="Цены > Маникюр",
    chunk_id="c1",
)


def _intent(intent: Intent, source: IntentSource = IntentSource.HEURISTIC) -> IntentResult:
    return IntentResult(intent, 0.9, source)


def _knowledge(*, relevant: list[KnowledgeHit], quotable: KnowledgeHit | None = None, found: bool = True) -> Knowledge:
    return Knowledge(found=found, relevant=relevant, quotable=quotable)


# --- route: who handles the turn ------------------------------------------------------------------


def test_a_turn_with_nothing_to_read_is_stored_or_forwarded_to_the_manager():
    silent = replace(NO_WORDS, readable=False)
    assert reply_policy.route(silent, None) == Decision(Action.STORE)
    assert reply_policy.route(replace(silent, handover=HandoverStatus.ACTIVE), None) == Decision(Action.FORWARD)


def test_a_file_alone_is_thanked_for_and_a_voice_note_not_recognised_asks_to_write():
    assert reply_policy.route(replace(NO_WORDS, attachments_only=True), None) == Decision(Action.ANSWER, text=replies.MEDIA_RECEIVED)
    assert reply_policy.route(replace(NO_WORDS, voice_failed_only=True), None) == Decision(Action.ANSWER, text=replies.VOICE_NOT_RECOGNISED)
    assert reply_policy.route(NO_WORDS, None) == Decision(Action.STORE)  # a sticker, a location: nothing to say


def test_without_words_a_muted_bot_stays_quiet_and_a_manager_gets_the_file():
    file_only = replace(NO_WORDS, attachments_only=True)
    assert reply_policy.route(replace(file_only, bot_muted=True), None) == Decision(Action.STORE)
    assert reply_policy.route(replace(file_only, handover=HandoverStatus.PENDING), None) == Decision(Action.FORWARD)


def test_while_a_handover_is_open_the_turn_goes_to_the_manager_unless_the_customer_withdraws_a_pending_one():
    pending, active = replace(WORDS, handover=HandoverStatus.PENDING), replace(WORDS, handover=HandoverStatus.ACTIVE)
    opt_out = _intent(Intent.OPT_OUT)
    assert reply_policy.route(pending, opt_out) == Decision(
        Action.OPT_OUT, text=replies.OPT_OUT_ACK, intent=Intent.OPT_OUT, intent_source=IntentSource.HEURISTIC
    )
    assert reply_policy.route(active, opt_out) == Decision(Action.FORWARD, intent=Intent.OPT_OUT, intent_source=IntentSource.HEURISTIC)
    for intent in (Intent.HUMAN_REQUEST, Intent.FRUSTRATION, Intent.QUESTION):
        assert reply_policy.route(pending, _intent(intent)) == Decision(Action.FORWARD, intent=intent, intent_source=IntentSource.HEURISTIC)


def test_a_muted_bot_answers_only_a_request_for_a_human():
    muted = replace(WORDS, bot_muted=True)
    asked = reply_policy.route(muted, _intent(Intent.HUMAN_REQUEST))
    assert asked is not None and (asked.action, asked.text, asked.reason) == (
        Action.ESCALATE,
        replies.HANDOVER_ACK,
        HandoverReason.HUMAN_REQUEST,
    )
    for intent in (Intent.QUESTION, Intent.FRUSTRATION, Intent.OPT_OUT, Intent.GREETING):
        assert reply_policy.route(muted, _intent(intent)) == Decision(Action.STORE, intent=intent, intent_source=IntentSource.HEURISTIC)


def test_the_customers_no_opts_out_and_a_human_request_or_frustration_escalates():
    assert reply_policy.route(WORDS, _intent(Intent.OPT_OUT)) == Decision(
        Action.OPT_OUT, text=replies.OPT_OUT_ACK, intent=Intent.OPT_OUT, intent_source=IntentSource.HEURISTIC
    )
    human = reply_policy.route(WORDS, _intent(Intent.HUMAN_REQUEST, IntentSource.LLM))
    assert human == Decision(
        Action.ESCALATE,
        text=replies.HANDOVER_ACK,
        reason=HandoverReason.HUMAN_REQUEST,
        intent=Intent.HUMAN_REQUEST,
        intent_source=IntentSource.LLM,
    )
    upset = reply_policy.route(WORDS, _intent(Intent.FRUSTRATION))
    assert upset is not None and (upset.action, upset.text, upset.reason) == (
        Action.ESCALATE,
        replies.HANDOVER_ACK_FRUSTRATION,
        HandoverReason.FRUSTRATION,
    )


@pytest.mark.parametrize("intent", [Intent.QUESTION, Intent.GREETING, Intent.OTHER])
def test_everything_else_is_the_bots_to_answer(intent: Intent):
    assert reply_policy.route(WORDS, _intent(intent)) is None


# --- answer: the bot's own answer ----------------------------------------------------------------


def test_the_model_is_asked_with_the_relevant_knowledge_only():
    step = reply_policy.answer(WORDS, QUESTION, _knowledge(relevant=[PRICE]), model_configured=True)
    assert step == AskModel([PRICE.text])
    # A client without a knowledge base (or one that is unreachable): the model answers from the prompt alone.
    assert reply_policy.answer(WORDS, QUESTION, NOTHING, model_configured=True) == AskModel([])


def test_a_question_the_knowledge_base_cannot_answer_gets_the_honest_reply_and_a_manager():
    nothing_relevant = _knowledge(relevant=[])
    decision = reply_policy.answer(WORDS, QUESTION, nothing_relevant, model_configured=True)
    assert decision == Decision(
        Action.ESCALATE,
        text=replies.FALLBACK_RESPONSES["no_knowledge"],
        reason=HandoverReason.NO_KNOWLEDGE,
        intent=Intent.QUESTION,
        intent_source=IntentSource.HEURISTIC,
    )
    quiet_client = replace(WORDS, escalate_on_no_knowledge=False)
    decision = reply_policy.answer(quiet_client, QUESTION, nothing_relevant, model_configured=True)
    assert isinstance(decision, Decision) and (decision.action, decision.reason) == (Action.ANSWER, None)
    # Small talk needs no knowledge: the model answers it.
    assert reply_policy.answer(WORDS, _intent(Intent.OTHER), nothing_relevant, model_configured=True) == AskModel([])


def test_without_a_model_a_greeting_is_greeted_and_only_a_confident_match_is_quoted():
    greeting = reply_policy.answer(WORDS, _intent(Intent.GREETING), NOTHING, model_configured=False)
    assert isinstance(greeting, Decision) and (greeting.action, greeting.text) == (Action.ANSWER, replies.GREETING)

    quoted = reply_policy.answer(WORDS, QUESTION, _knowledge(relevant=[PRICE], quotable=PRICE), model_configured=False)
    assert isinstance(quoted, Decision) and quoted.action == Action.ANSWER
    assert quoted.text == "Маникюр с покрытием гель-лаком — 8 000 тг."  # the passage without its heading line

    unsure = reply_policy.answer(WORDS, QUESTION, _knowledge(relevant=[PRICE]), model_configured=False)
    assert isinstance(unsure, Decision) and (unsure.action, unsure.reason) == (Action.ESCALATE, HandoverReason.NO_KNOWLEDGE)


def test_a_long_passage_is_quoted_in_part():
    long_hit = replace(PRICE, text="Цены > Маникюр\n" + "Маникюр с покрытием гель-лаком стоит 8 000 тг. " * 60)
    decision = reply_policy.without_model(WORDS, QUESTION, _knowledge(relevant=[long_hit], quotable=long_hit))
    assert decision.text is not None and 0 < len(decision.text) <= reply_policy.QUOTE_CHARS
    assert decision.text.startswith("Маникюр с покрытием")


def test_the_models_answer_is_sent_and_its_failure_calls_a_manager():
    assert reply_policy.model_answered(QUESTION, "8 000 тг.") == Decision(
        Action.ANSWER, text="8 000 тг.", intent=Intent.QUESTION, intent_source=IntentSource.HEURISTIC
    )
    failed = reply_policy.model_failed(QUESTION)
    assert (failed.action, failed.text, failed.reason) == (
        Action.ESCALATE,
        replies.FALLBACK_RESPONSES["ai_error"],
        HandoverReason.AI_ERROR,
    )


def test_once_a_manager_stepped_in_the_bot_keeps_quiet():
    for action in (Action.ANSWER, Action.ESCALATE, Action.STORE):
        decision = Decision(action, text="…", intent=Intent.QUESTION, intent_source=IntentSource.LLM)
        assert reply_policy.manager_stepped_in(decision) == Decision(Action.FORWARD, intent=Intent.QUESTION, intent_source=IntentSource.LLM)
    withdrawn = Decision(Action.OPT_OUT, text=replies.OPT_OUT_ACK)
    assert reply_policy.manager_stepped_in(withdrawn) is withdrawn  # cancelling a pending handover is still the customer's right
