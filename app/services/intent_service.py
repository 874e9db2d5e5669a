"""What the customer wants from this turn: a human, to complain, to stop, a question, a greeting.

Heuristics first (Russian, Kazakh, Russian typed in Latin letters); when a language model is configured
it is asked only about the unclear cases, with a strict JSON answer and a short timeout, and the
heuristic result stands whenever the model fails.
"""

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.services import ai_service
from app.utils.errors import ConfigError, ExternalServiceError

logger = logging.getLogger(__name__)

INTENTS = ("human_request", "frustration", "opt_out", "question", "greeting", "other")
ESCALATE_INTENTS = frozenset({"human_request", "frustration"})
UNCLEAR_BELOW = 0.7


@dataclass(frozen=True)
class IntentResult:
    intent: str
    confidence: float
    source: str = "heuristic"


_TRANSLIT = str.maketrans(
    {
        "a": "а", "b": "б", "v": "в", "g": "г", "d": "д", "e": "е", "z": "з", "i": "и", "y": "ы", "k": "к", "l": "л",
        "m": "м", "n": "н", "o": "о", "p": "п", "r": "р", "s": "с", "t": "т", "u": "у", "f": "ф", "h": "х", "c": "ц",
        "j": "й", "w": "в", "x": "кс", "q": "к",
    }
)  # fmt: skip
_TRANSLIT_DIGRAPHS = (
    ("shch", "щ"),
    ("sch", "щ"),
    ("zh", "ж"),
    ("kh", "х"),
    ("ch", "ч"),
    ("sh", "ш"),
    ("ts", "ц"),
    ("yu", "ю"),
    ("ya", "я"),
    ("yo", "е"),
)


def normalise(text: str) -> str:
    """Lower case, ё->е, Latin-typed Russian to Cyrillic, repeated letters collapsed, punctuation to spaces."""
    lowered = text.lower().replace("ё", "е")
    if re.search(r"[a-z]", lowered):
        for latin, cyrillic in _TRANSLIT_DIGRAPHS:
            lowered = lowered.replace(latin, cyrillic)
        lowered = lowered.translate(_TRANSLIT)
    lowered = re.sub(r"(.)\1{2,}", r"\1", lowered)  # "мееенеджер" -> "менеджер", keeps "сс"/"нн"
    return re.sub(r"[^\w\s]", " ", lowered)


def _rx(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


_STAFF = r"(?:менедж|менеж|мэнедж|оператор|админ|администратор|консультант|сотрудник|специалист|руководител|директор|хозяин|владел)"
_PERSON = r"(?:жив\w* (?:человек|чел|люд)|человек\w*|реальн\w* (?:человек|люд)|не (?:с )?бот\w*|тiрi адам|тірі адам|адам\w*)"
_HUMAN = _rx(
    rf"(?:позов|зов|позв|соедин|переключ|свяж|дай|дайте|нуж|хочу|можно|пригласи|подключ|передай|передайте)\w* .{{0,25}}{_STAFF}",
    rf"{_STAFF}\w* .{{0,20}}(?:позов|нуж|пожалуйста|можно|пусть|свяж|ответ|напиш|позвон)",
    rf"(?:поговор|общ|связ|разговар)\w* .{{0,20}}(?:{_STAFF}|{_PERSON})",
    rf"(?:хочу|нужен|нужна|дайте|позовите) .{{0,10}}{_PERSON}",
    r"позвон\w* (?:мне|нам|пожалуйста)",
    r"перезвон\w*",
    r"(?:менеджер|оператор|админ)\w* (?:керек|шақыр|шакыр|жаз|қосы|косы|бер)",
    r"(?:адам\w*|менеджер\w*|оператор\w*) .{0,15}(?:сөйлес|сойлес|хабарлас|керек)",
    r"тірі адам|тiрi адам|тiрi адаммен|тірі адаммен",
    rf"^\W*{_STAFF}\w*\W*$",
)
_HUMAN_NEGATED = _rx(
    rf"(?:не|без|ненадо|не надо|не нужно|не нужен|не зовите|не нужна) .{{0,12}}{_STAFF}",
    rf"{_STAFF}\w* .{{0,10}}(?:не нуж|не надо|керек емес|қажет емес|кажет емес)",
    r"керек емес",
)
_ABOUT_STAFF = _rx(rf"{_STAFF}\w* .{{0,25}}(?:до скольк|когда|работа|во сколько|сколько|где|как зовут|есть ли)")
_FRUSTRATION = _rx(
    r"безобраз|ужас|кошмар|отврат|издева|сколько можно|надоел|достал|бесит|бесишь|возмутит|хамств|хамит|нагруб|позор",
    r"верните деньги|верни деньги|вернуть деньги|возврат (?:денег|средств)|жалоб|пожалуюсь|претензи|обман|развод|мошен",
    r"не (?:отвеча|помог|работае|понима)\w*.{0,20}(?:уже|час|день|дня|раз|вообще|никто)",
    r"(?:тупой|тупая|глуп|бесполезн|идиот|дурак|дебил|туп)\w* (?:бот|робот|ассистент|машин)",
    r"(?:бот|робот)\w* .{0,10}(?:тупой|глупый|бесполезн|не понима)",
    r"отвратительн|хуже некуда|никогда больше|ноль внимания|зря потрат|испортил|испортили|плохо сделал",
    r"ұят|уят|нашар|алдадың|алдадыңдар|алдады|ақшамды қайтар|акшамды кайтар|шағым|шагым|сұмдық|сумдык|жаман қызмет",
)
_ARE_YOU_A_BOT = _rx(r"(?:ты|вы|это) (?:бот|робот)|с ботом (?:общаюсь|говорю|переписываюсь)")
_OPT_OUT = _rx(
    r"^\W*(?:стоп|stop|хватит|отстаньте|отстань|отписк|отпиши\w*)\W*$",
    r"не пиши\w*|не присылай\w*|не беспоко\w*|хватит (?:писать|присылать|спамить)|отстаньте|отстань от|отпишите|прекратите (?:писать|рассылк)",
    r"удалите (?:мой )?номер|больше не пиш|спам не нужен",
    r"жазбаңыз|жазбаныз|жазба|мазаламаңыз|мазаламаныз|хабарлама жібермеңіз",
)
_GREETING = _rx(
    r"^\W*(?:привет\w*|здравствуй\w*|здрасте|добрый (?:день|вечер|утро)|доброе утро|доброго (?:дня|времени)|салам\w*|сәлем\w*|салем\w*|"
    r"сәлеметсіз бе|салеметсиз бе|ассалаумағалейкум|ассаламуалейкум|хай|hello|hi)\W*(?:\w+\W*){0,2}$"
)
_QUESTION = _rx(
    r"\?",
    r"\b(?:сколько|когда|где|как|какой|какая|какие|почему|зачем|можно ли|можно|есть ли|есть|подскажите|скажите|интересует|хотел\w* узнать|"
    r"хочу записаться|записаться|запишите|запись|цена|стоимость|прайс|"
    r"қанша|қашан|қайда|қалай|бар ма|ма\b|ме\b|ба\b|бе\b|па\b|пе\b)",
)


def classify_heuristic(text: str) -> IntentResult:
    """Fast rules: what the customer wants and how sure the rule is."""
    raw = text.strip()
    if not raw:
        return IntentResult("other", 0.5)
    norm = normalise(raw)
    words = norm.split()
    if _OPT_OUT.search(norm) and not _HUMAN.search(norm):
        return IntentResult("opt_out", 0.9)
    human = bool(_HUMAN.search(norm)) and not _HUMAN_NEGATED.search(norm) and not _ABOUT_STAFF.search(norm)
    frustrated = bool(_FRUSTRATION.search(norm))
    if human:
        return IntentResult("human_request", 0.95 if len(words) <= 12 else 0.85)
    if frustrated:
        return IntentResult("frustration", 0.85)
    if _ARE_YOU_A_BOT.search(norm):
        return IntentResult("frustration", 0.65)
    shouting = _shouting(raw)
    marks = raw.count("!") + raw.count("?")
    if re.search(r"[!?]{3,}", raw) or (marks >= 4 and len(words) <= 8):
        return IntentResult("frustration", 0.7 if shouting else 0.6)
    if shouting:
        return IntentResult("frustration", 0.6)
    if _GREETING.search(norm) and len(words) <= 5:
        return IntentResult("greeting", 0.9)
    if _QUESTION.search(norm) or "?" in raw:
        return IntentResult("question", 0.8)
    return IntentResult("other", 0.5)


def _shouting(text: str) -> bool:
    """At least two long words in capitals and most letters upper case: not 'ОК' or 'СПА'."""
    long_caps = [w for w in re.findall(r"\b\w{4,}\b", text) if w.isupper()]
    letters = [c for c in text if c.isalpha()]
    return len(long_caps) >= 2 and sum(c.isupper() for c in letters) >= 0.7 * len(letters)


def is_unclear(result: IntentResult) -> bool:
    """Only an uncertain escalation is worth a model call: anything else is answered by the assistant anyway."""
    return result.intent in ESCALATE_INTENTS and result.confidence < UNCLEAR_BELOW


_LLM_PROMPT = (
    "Классифицируй сообщение клиента компании в WhatsApp (русский или казахский). Ответь строго JSON "
    '{"intent": "...", "confidence": 0..1}. intent одно из: human_request (просит живого человека, менеджера, '
    "оператора, звонок), frustration (жалоба, раздражение, грубость), opt_out (просит не писать ему), "
    "question (вопрос об услугах, ценах, записи), greeting (только приветствие), other."
)


def classify(text: str, *, history: Sequence[Any] = ()) -> IntentResult:
    """Heuristics, then the language model for unclear cases when one is configured."""
    result = classify_heuristic(text)
    if not is_unclear(result) or not ai_service.is_configured():
        return result
    try:
        raw = ai_service.complete(
            [{"role": "system", "content": _LLM_PROMPT}, {"role": "user", "content": text[:1500]}],
            max_tokens=40,
            json_mode=True,
            timeout=5.0,
            log_extra={"purpose": "intent"},
        )
        data = json.loads(raw)
        intent = str(data.get("intent", ""))
        confidence = float(data.get("confidence", 0.7))
    except (ConfigError, ExternalServiceError, ValueError, TypeError, AttributeError) as exc:
        logger.warning("intent.llm_failed", extra={"error_type": type(exc).__name__})
        return result
    if intent not in INTENTS:
        logger.warning("intent.llm_invalid", extra={"intent": intent[:40]})
        return result
    return IntentResult(intent, max(0.0, min(1.0, confidence)), "llm")
