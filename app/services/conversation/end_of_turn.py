"""How long to wait after a customer's message for them to go on writing (end-of-turn detection).

Pure and fast: a few string checks, no I/O. The answer is a multiple of the client's base wait; the caller
(scheduling.py) still caps the turn by its maximum wait from the turn's first message.

The text is read without emoji, trailing bracket smileys and spaces ("спасибо)", "ок 👍"), lower-cased,
"ё" read as "е". The first matching row wins:

| #  | the message                                                    | example                      | wait      |
|----|----------------------------------------------------------------|------------------------------|-----------|
| 1  | a voice note (message_type "audio")                            | (voice)                      | SHORT     |
| 2  | image / video / document without a caption                     | (photo)                      | LONG      |
| 3  | other non-text without text (sticker, location, contact, ...)  | (sticker)                    | base      |
| 4  | only emoji or bracket smileys                                  | "👍", ")))"                  | SHORT     |
| 5  | ends with "?"                                                  | "а сколько стоит?"           | SHORT     |
| 6  | ends with "..." or "…"                                         | "я хотела спросить..."       | LONG      |
| 7  | ends with "," or ":"                                           | "у меня два вопроса:"        | LONG      |
| 8  | last word a conjunction or preposition (CONTINUATIONS)         | "хочу записаться на"         | LONG      |
| 9  | a lone greeting (GREETINGS) opening the turn                   | "Здравствуйте!"              | LONG      |
| 10 | only short-answer words, at most 3 (SHORT_ANSWERS)             | "да", "нет, спасибо", "иә"   | SHORT     |
| 11 | longer than LONG_MESSAGE_CHARS (120)                           | a whole request in one go    | SHORT     |
| 12 | ends with "." or "!" and the turn so far exceeds 120 chars     | last piece of a burst        | SHORT     |
| 13 | anything else                                                  | "маникюр"                    | base      |

SHORT = SHORT_FACTOR (0.4) x base, LONG = LONG_FACTOR (1.8) x base. `previous_texts` are the earlier
messages of the same turn: a greeting after them is no longer an opener (row 9 does not apply) and they
count towards the turn length of row 12.
"""

import re
import unicodedata

from app.models import MessageType

SHORT_FACTOR = 0.4
LONG_FACTOR = 1.8
LONG_MESSAGE_CHARS = 120
SHORT_ANSWER_MAX_WORDS = 3

_MEDIA_TYPES = frozenset({MessageType.IMAGE, MessageType.VIDEO, MessageType.DOCUMENT})

# A message ending on one of these is very likely cut off: the customer is still typing the rest.
# Words that also end complete sentences ("как", "тоже", "да/де", Kazakh postpositions such as "үшін") are left out.
CONTINUATIONS = frozenset(
    {
        # Russian conjunctions
        "и", "а", "но", "или", "либо", "что", "чтобы", "если", "когда", "потому", "хотя", "зато", "причем", "притом",
        # Russian prepositions
        "в", "во", "на", "с", "со", "к", "ко", "у", "о", "об", "по", "за", "из", "от", "до", "для", "про", "при",
        "без", "под", "над", "через", "между", "перед",
        # Kazakh conjunctions ("мен/бен/пен" = "and/with")
        "мен", "бен", "пен", "және", "бірақ", "немесе", "әлде", "егер", "себебі", "өйткені", "сондықтан", "яғни",
    }
)  # fmt: skip

# Whole-message greetings; said alone they are usually followed by the actual question.
GREETINGS = frozenset(
    {
        "привет", "приветик", "здравствуйте", "здравствуй", "здрасте", "здрасьте", "добрый день", "добрый вечер",
        "доброе утро", "доброй ночи", "хай", "салам", "салем", "сәлем", "сәлеметсіз бе", "салеметсиз бе",
        "сәлеметсіз", "ассалаумағалейкум", "ассаламуалейкум", "салам алейкум", "армысыз", "қайырлы күн",
        "hello", "hi", "salam", "salem",
    }
)  # fmt: skip

# Acknowledgements and yes/no answers: complete on their own.
SHORT_ANSWERS = frozenset(
    {
        "да", "нет", "ок", "окей", "ok", "okay", "ага", "угу", "хорошо", "ладно", "понятно", "ясно", "спасибо",
        "спс", "благодарю", "отлично", "супер", "договорились", "давайте", "конечно", "верно", "точно", "все",
        "иә", "ия", "жоқ", "жок", "рахмет", "рақмет", "рахмат", "жақсы", "жарайды", "болды", "түсінікті", "келісемін",
    }
)  # fmt: skip

_TRAILING_DECOR = re.compile(r"[\s)(]+$")
_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")


def wait_seconds(*, message_type: str, text: str, base_wait: float, previous_texts: list[str] | None = None) -> float:
    """Seconds to wait after this message before answering the turn (see the table above)."""
    return max(0.0, base_wait) * _factor(message_type, text, previous_texts or [])


def _factor(message_type: str, text: str, previous_texts: list[str]) -> float:
    if message_type == MessageType.AUDIO:
        return SHORT_FACTOR
    core = _core(text)
    if not core:
        if text.strip() and not any(ch.isalnum() for ch in text):
            return SHORT_FACTOR  # emoji or ")))" alone: an acknowledgement
        return LONG_FACTOR if message_type in _MEDIA_TYPES else 1.0
    if core.endswith("?"):
        return SHORT_FACTOR
    if core.endswith(("...", "…", ",", ":")):
        return LONG_FACTOR
    words = _WORD.findall(core)
    if words and words[-1] in CONTINUATIONS:
        return LONG_FACTOR
    phrase = " ".join(words)
    if phrase in GREETINGS and not any(t.strip() for t in previous_texts):
        return LONG_FACTOR
    if words and len(words) <= SHORT_ANSWER_MAX_WORDS and all(w in SHORT_ANSWERS for w in words):
        return SHORT_FACTOR
    if len(core) > LONG_MESSAGE_CHARS:
        return SHORT_FACTOR
    if core.endswith((".", "!")) and len(core) + sum(len(t.strip()) for t in previous_texts) > LONG_MESSAGE_CHARS:
        return SHORT_FACTOR
    return 1.0


def _core(text: str) -> str:
    """The text without trailing emoji, bracket smileys and spaces; lower-cased, "ё" as "е"."""
    kept = "".join(ch for ch in unicodedata.normalize("NFC", text) if not _is_decoration(ch))
    return _TRAILING_DECOR.sub("", kept.strip()).lower().replace("ё", "е")


def _is_decoration(ch: str) -> bool:
    # Emoji, pictographs, variation selectors and joiners: symbols that carry no words or punctuation.
    return unicodedata.category(ch) in ("So", "Sk", "Cf", "Mn") and not ch.isalnum()
