"""What the customer wants from a turn: the rules and the learned classifier (app/intents), with the client's
own examples, decide; the language model, when one is configured, is asked only about what they leave unclear.

A strong rule wins; otherwise the model's probabilities with per-class thresholds (app/intents/decide.py).
The classifier reads the turn's e5 query vector, the one the knowledge search uses (kb.query_vector): a turn
embeds its text once. When the classifier fails the rules decide alone; when the language model fails (or
the client's budget for it is spent) the classifier's decision stands.
"""

import json
import logging
import uuid
from collections.abc import Callable

from app.intents import classifier, examples
from app.intents.decide import Decision
from app.intents.labels import ESCALATE, Intent, IntentResult, IntentSource
from app.intents.neighbours import ClientExamples
from app.intents.rules import classify_heuristic, is_unclear
from app.services.conversation import assistant
from app.utils.errors import ConfigError, ExternalServiceError

logger = logging.getLogger(__name__)

__all__ = ["ESCALATE", "Intent", "IntentResult", "IntentSource", "classify", "decision_for"]

_LLM_PROMPT = (
    "Классифицируй сообщение клиента компании в WhatsApp (русский или казахский). Ответь строго JSON "
    '{"intent": "...", "confidence": 0..1}. intent одно из: human_request (просит живого человека, менеджера, '
    "оператора, звонок), frustration (жалоба, раздражение, грубость, сарказм), opt_out (просит не писать ему), "
    "booking (записаться, перенести или отменить запись, заказ), question (вопрос об услугах, ценах, условиях), "
    "greeting (только приветствие), thanks (благодарность), other."
)


def decision_for(text: str, *, client_id: uuid.UUID | None = None) -> Decision:
    """Rules, model and the client's examples on a turn's text (no language model): what `intent --json` shows."""
    return classifier.classify(text, examples=_examples(client_id))


def _examples(client_id: uuid.UUID | None) -> ClientExamples | None:
    if client_id is None:
        return None
    try:
        return examples.for_client(client_id)
    except Exception as exc:  # the examples refine the decision; without them the shipped model still decides
        logger.exception("intent.examples_failed", extra={"client_id": str(client_id), "error_type": type(exc).__name__})
        return None


def classify(text: str, *, client_id: uuid.UUID | None = None, model_allowed: Callable[[], bool] = lambda: True) -> IntentResult:
    """The turn's intent: rules and classifier, then the language model for an unclear decision when one is
    configured (and `model_allowed()`: asked only then, so a budget counts only the calls made)."""
    try:
        decision = decision_for(text, client_id=client_id)
        result, unclear = decision.result(), decision.unclear
    except Exception as exc:  # a local numpy model and e5: a bug in them must not cost the customer an answer
        logger.exception("intent.classifier_failed", extra={"error_type": type(exc).__name__})
        result = classify_heuristic(text)
        unclear = is_unclear(result)
    if not unclear or not assistant.is_configured() or not model_allowed():
        return result
    try:
        raw = assistant.complete(
            [{"role": "system", "content": _LLM_PROMPT}, {"role": "user", "content": text[:1500]}],
            max_tokens=40,
            json_mode=True,
            timeout=5.0,
            log_extra={"purpose": "intent"},
        )
        data = json.loads(raw)
        raw_intent = str(data.get("intent", ""))
        confidence = float(data.get("confidence", 0.7))
    except (ConfigError, ExternalServiceError, ValueError, TypeError, AttributeError) as exc:
        logger.warning("intent.llm_failed", extra={"error_type": type(exc).__name__})
        return result
    try:
        intent = Intent(raw_intent)
    except ValueError:
        logger.warning("intent.llm_invalid", extra={"intent": raw_intent[:40]})
        return result
    return IntentResult(intent, max(0.0, min(1.0, confidence)), IntentSource.LLM)
