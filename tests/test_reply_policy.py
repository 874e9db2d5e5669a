"""The reply policy on its own: what the bot does with a turn, from its facts, intent and knowledge (no I/O)."""

from dataclasses import replace

import pytest

from app.intents.labels import Intent, IntentResult, IntentSource
from app.models import HandoverReason, HandoverStatus
from app.schemas.client import ClientSettings, NoKnowledgePolicy
from app.services import replies
from app.services.conversation import reply_policy, sensitive
from app.services.conversation.assistant import Handoff, ModelAnswer
from app.services.conversation.reply_policy import Action, AskModel, BotStep, Decision, TurnFacts
from app.services.knowledge.kb import NOTHING, Knowledge, KnowledgeHit

WORDS = TurnFacts(
    readable=True,
    words=True,
    voice_failed_only=False,
    attachments_only=False,
    handover=None,
    bot_muted=False,
)
ESCALATING = replace(WORDS, settings=ClientSettings(no_knowledge_policy=NoKnowledgePolicy.ESCALATE))
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
    told = replace(file_only, handover=HandoverStatus.PENDING, minutes_since_notice=1.0)
    assert reply_policy.route(told, None) == Decision(Action.FORWARD)


def test_while_a_handover_is_open_the_turn_goes_to_the_manager_unless_the_customer_withdraws_a_pending_one():
    told = replace(WORDS, minutes_since_notice=1.0)  # just told: no waiting notice now
    pending, active = replace(told, handover=HandoverStatus.PENDING), replace(told, handover=HandoverStatus.ACTIVE)
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


def test_a_question_the_knowledge_base_cannot_answer_gets_the_honest_reply_and_a_manager_when_the_client_says_so():
    nothing_relevant = _knowledge(relevant=[])
    decision = reply_policy.answer(ESCALATING, QUESTION, nothing_relevant, model_configured=True)
    assert decision == Decision(
        Action.ESCALATE,
        text=replies.FALLBACK_RESPONSES["no_knowledge"],
        reason=HandoverReason.NO_KNOWLEDGE,
        intent=Intent.QUESTION,
        intent_source=IntentSource.HEURISTIC,
    )
    decision = reply_policy.answer(WORDS, QUESTION, nothing_relevant, model_configured=True)  # the default: ask first
    assert isinstance(decision, Decision) and (decision.action, decision.reason, decision.step) == (Action.ANSWER, None, BotStep.CLARIFY)
    # Small talk needs no knowledge: the model answers it.
    assert reply_policy.answer(WORDS, _intent(Intent.OTHER), nothing_relevant, model_configured=True) == AskModel([])


def test_without_a_model_a_greeting_is_greeted_and_only_a_confident_match_is_quoted():
    greeting = reply_policy.answer(WORDS, _intent(Intent.GREETING), NOTHING, model_configured=False)
    assert isinstance(greeting, Decision) and (greeting.action, greeting.text) == (Action.ANSWER, replies.GREETING)

    quoted = reply_policy.answer(WORDS, QUESTION, _knowledge(relevant=[PRICE], quotable=PRICE), model_configured=False)
    assert isinstance(quoted, Decision) and quoted.action == Action.ANSWER
    assert quoted.text == "Маникюр с покрытием гель-лаком — 8 000 тг."  # the passage without its heading line

    unsure = reply_policy.answer(ESCALATING, QUESTION, _knowledge(relevant=[PRICE]), model_configured=False)
    assert isinstance(unsure, Decision) and (unsure.action, unsure.reason) == (Action.ESCALATE, HandoverReason.NO_KNOWLEDGE)


def test_a_long_passage_is_quoted_in_part():
    long_hit = replace(PRICE, text="Цены > Маникюр\n" + "Маникюр с покрытием гель-лаком стоит 8 000 тг. " * 60)
    decision = reply_policy.without_model(WORDS, QUESTION, _knowledge(relevant=[long_hit], quotable=long_hit))
    assert decision.text is not None and 0 < len(decision.text) <= reply_policy.QUOTE_CHARS
    assert decision.text.startswith("Маникюр с покрытием")


def test_the_models_answer_is_sent_and_its_failure_calls_a_manager():
    assert reply_policy.model_answered(WORDS, QUESTION, ModelAnswer("8 000 тг.")) == Decision(
        Action.ANSWER, text="8 000 тг.", intent=Intent.QUESTION, intent_source=IntentSource.HEURISTIC
    )
    failed = reply_policy.model_failed(WORDS, QUESTION)
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


# --- the waiting customer, business hours ---------------------------------------------------------


def test_a_waiting_customer_hears_the_notice_at_most_once_per_interval_and_never_after_a_managers_reply():
    pending = replace(WORDS, handover=HandoverStatus.PENDING)
    question = _intent(Intent.QUESTION)
    assert reply_policy.route(replace(pending, minutes_since_notice=3.0), question) == Decision(
        Action.FORWARD, intent=Intent.QUESTION, intent_source=IntentSource.HEURISTIC
    )  # just after the acknowledgement: nothing more
    due = reply_policy.route(replace(pending, minutes_since_notice=10.0), question)
    assert due is not None and (due.action, due.text, due.step) == (Action.FORWARD, "Менеджер скоро ответит.", BotStep.WAITING_NOTICE)
    own_text = replace(pending, minutes_since_notice=11.0, settings=ClientSettings(waiting_notice_text="Мастер Алия скоро ответит!"))
    assert reply_policy.route(own_text, question).text == "Мастер Алия скоро ответит!"  # type: ignore[union-attr]
    answered = replace(pending, handover=HandoverStatus.ACTIVE, manager_replied=True, minutes_since_notice=500.0)
    assert reply_policy.route(answered, question).text is None  # type: ignore[union-attr]
    taken_silent = replace(pending, handover=HandoverStatus.ACTIVE, minutes_since_notice=30.0)
    assert reply_policy.route(taken_silent, question).text == "Менеджер скоро ответит."  # type: ignore[union-attr]


def test_out_of_hours_the_customer_is_told_when_a_manager_answers_not_soon():
    closed = replace(WORDS, open_now=False, opens="завтра с 10:00")
    human = reply_policy.route(closed, _intent(Intent.HUMAN_REQUEST))
    assert human is not None and human.text == "Передаю ваш вопрос менеджеру. Сейчас мы не работаем — ответим завтра с 10:00."
    waiting = reply_policy.route(replace(closed, handover=HandoverStatus.PENDING, minutes_since_notice=20.0), _intent(Intent.QUESTION))
    assert waiting is not None and waiting.text == "Сейчас мы не работаем — менеджер ответит завтра с 10:00."
    assert reply_policy.already_called(closed) == "Менеджер уже получил ваш запрос и ответит завтра с 10:00."
    assert reply_policy.already_called(WORDS) == replies.HANDOVER_ALREADY


# --- no knowledge: clarify, then offer a manager --------------------------------------------------


def test_no_knowledge_asks_once_then_offers_a_manager_and_yes_escalates_no_continues():
    nothing = _knowledge(relevant=[])
    first = reply_policy.answer(WORDS, QUESTION, nothing, model_configured=True)
    assert isinstance(first, Decision) and (first.text, first.step) == (replies.CLARIFY, BotStep.CLARIFY)
    second = reply_policy.answer(replace(WORDS, last_step=BotStep.CLARIFY), QUESTION, nothing, model_configured=True)
    assert isinstance(second, Decision) and (second.action, second.text, second.step) == (
        Action.ANSWER,
        replies.OFFER_MANAGER,
        BotStep.OFFER,
    )
    offered = replace(WORDS, last_step=BotStep.OFFER)
    yes = reply_policy.route(replace(offered, answer_to_offer=True), _intent(Intent.OTHER))
    assert yes is not None and (yes.action, yes.reason) == (Action.ESCALATE, HandoverReason.NO_KNOWLEDGE)
    no = reply_policy.route(replace(offered, answer_to_offer=False), _intent(Intent.OPT_OUT))  # "не надо" declines the offer
    assert no is not None and (no.action, no.text) == (Action.ANSWER, replies.OFFER_DECLINED)
    human = reply_policy.route(WORDS, _intent(Intent.HUMAN_REQUEST))  # an explicit request still escalates at once
    assert human is not None and human.action == Action.ESCALATE


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("да", True),
        ("Да, пожалуйста", True),
        ("иә", True),
        ("ок", True),
        ("давайте", True),
        ("ok", True),
        ("нет", False),
        ("Нет, спасибо", False),
        ("не надо", False),
        ("жоқ", False),
        ("да, а сколько стоит стрижка?", None),
        ("стрижка", None),
    ],
)
def test_yes_and_no_in_russian_and_kazakh(text: str, answer: bool | None):
    assert reply_policy.yes_or_no(text) is answer


# --- sensitive topics and the model's judgement ---------------------------------------------------


def test_a_sensitive_topic_escalates_with_its_reason():
    decision = reply_policy.route(replace(WORDS, sensitive_topic="способы оплаты"), QUESTION)
    assert decision is not None and (decision.action, decision.reason, decision.detail, decision.text) == (
        Action.ESCALATE,
        HandoverReason.SENSITIVE,
        "способы оплаты",
        replies.HANDOVER_ACK_SENSITIVE,
    )


def test_the_models_judgement_hands_over_and_a_straying_or_leaking_answer_is_never_sent():
    cases = {
        Handoff.HUMAN_REQUEST: HandoverReason.HUMAN_REQUEST,
        Handoff.FRUSTRATION: HandoverReason.FRUSTRATION,
        Handoff.SENSITIVE: HandoverReason.SENSITIVE,
    }
    for handoff, reason in cases.items():
        decision = reply_policy.model_answered(WORDS, QUESTION, ModelAnswer("…", handoff, "почему"))
        assert (decision.action, decision.reason) == (Action.ESCALATE, reason)
    unknown = reply_policy.model_answered(WORDS, QUESTION, ModelAnswer("Не знаю", Handoff.NO_KNOWLEDGE))
    assert (unknown.action, unknown.step) == (Action.ANSWER, BotStep.CLARIFY)

    guard = sensitive.guard_for(ClientSettings(), "- Любые вопросы про оплату (Kaspi, рассрочка) — эскалация администратору.")
    facts = replace(WORDS, guard=guard)
    strayed = reply_policy.model_answered(facts, QUESTION, ModelAnswer("Оплатить можно через Kaspi или наличными."))
    assert (strayed.action, strayed.reason) == (Action.ESCALATE, HandoverReason.SENSITIVE)
    leaked = reply_policy.model_answered(
        replace(facts, guard=sensitive.Guard((), guard.policy_lines)),
        QUESTION,
        ModelAnswer("Любые вопросы про оплату (Kaspi, рассрочка) — эскалация администратору."),
    )
    assert leaked.action == Action.ESCALATE
    fine = reply_policy.model_answered(facts, QUESTION, ModelAnswer("Маникюр стоит 8 000 тг."))
    assert fine.action == Action.ANSWER
    helpful = reply_policy.model_answered(facts, QUESTION, ModelAnswer("Если нужно что-то исправить в записи — напишите."))
    assert helpful.action == Action.ANSWER  # words of a complaint are the customer's, not a topic an answer strays into


def test_without_a_model_an_internal_rule_loaded_as_knowledge_is_never_quoted():
    rule = replace(PRICE, text="Оплата\nЛюбые вопросы про оплату (Kaspi, рассрочка) — эскалация администратору.", heading="Оплата")
    decision = reply_policy.without_model(WORDS, QUESTION, _knowledge(relevant=[rule], quotable=rule))
    assert decision.text is not None and "эскалация" not in decision.text
