"""Topics a business wants a person for (contraindications, payment, refunds, moving an appointment, legal
threats, complaints), and the business's own rules for the bot (its policy document). Pure: no I/O.

- Each default topic is a list of word stems and phrases, matched on the customer's words normalised like
  the intent rules (lower case, Latin-typed Russian read as Cyrillic, Kazakh letters folded). A client keeps
  the topics listed in its `sensitive_topics` and adds `sensitive_keywords` ("гаранти*").
- The policy document (`client policy set`) is read line by line. A line that sends something to a person
  ("Любые вопросы про оплату (Kaspi, рассрочка) — эскалация", "Перенос записи решает только администратор")
  is a rule: the default topics its words name are switched on, and the words it lists in parentheses or
  names after "про/о/по поводу" become keywords of their own. Every line of the policy also goes to the
  model as an instruction, and an answer that repeats a policy line is never sent (leaks()).
"""

import re
from dataclasses import dataclass
from functools import lru_cache

import snowballstemmer

from app.intents.rules import normalise
from app.schemas.client import DEFAULT_SENSITIVE_TOPICS, ClientSettings

# key -> (label for managers and the model, stems ("оплат*") and phrases ("кормлю грудью"), space-separated)
_DEFAULTS: dict[str, tuple[str, str]] = {
    "medical": (
        "медицинские противопоказания, диагнозы, аллергия, беременность",
        "противопоказ* диагноз* аллерг* беремен* жукти* кормлю_грудью кормящ* лактац* грудное_вскармливание гв диабет* гипертон* "
        "эпилеп* онколог* опухол* гепатит* вич гормон* антибиотик* лекарств* таблетк* операци* швы герпес* псориаз* экзем* "
        "варикоз* тромб* кардиостимулятор* болезн* заболеван* кесарев* месячн* менструац* ожог* воспален* нагноен* отек* отекл* "
        "покраснен* покраснел* сыпь сыпью зуд* чешет* карсы_корсетилим аллергия* давлени*",
    ),
    "payment": (
        "способы оплаты и споры об оплате",
        "оплат* оплачива* заплат* платеж* платить плачу платим каспи* халык* рассрочк* кредит* наличн* налом налик* картой "
        "карточк* безнал* перевод* переведу переведите предоплат* депозит* чек списал* списан* толе* толем* qr",
    ),
    "refund": (
        "возврат денег",
        "возврат* компенсац* возмещ* вернуть_деньги верните_деньги вернете_деньги верните_предоплату вернуть_предоплату "
        "деньги_назад кайтар*",
    ),
    "appointment_change": (
        "перенос или отмена записи",
        "перенес* перенест* перенос* отмен* перезапис* сдвинуть сдвиньте поменять_время изменить_время другое_время "
        "не_смогу_прийти не_получится_прийти не_успею опоздаю опаздываю ауыстыр* болдырма* кешигем* келе_алмаим*",
    ),
    "legal": (
        "юридические претензии и угрозы",
        "суд суда суде суду судом судиться судебн* иск иска иском юрист* адвокат* прокурат* полици* роспотреб* прав_потребител* "
        "защиту_прав заявлени* зангер*",
    ),
    "complaint": (
        "жалобы на результат, мастера или врача",
        "жалоб* пожалов* претенз* недовол* не_понравил* испорт* испорч* изуродов* криво кривые кривой неаккуратн* некачествен* "
        "халтур* плохо_сделал* плохо_постриг* плохо_покрас* отвалил* облез* облезл* сколол* слезл* слезает переделат* переделк* "
        "исправит* исправьте грубил* нагрубил* хамил* нахамил* грубая грубый унамады шагым* плохие_отзывы плохой_отзыв негативн*",
    ),
}
assert tuple(_DEFAULTS) == DEFAULT_SENSITIVE_TOPICS

# A policy line that sends something to a person; one that tells the bot what not to do.
_HANDOFF = re.compile(
    normalise("эскалац")
    + r"\w*|(?:переда\w*|перевод\w*|направля\w*|зов\w*|подключ\w*|к|"
    + normalise("только")
    + r"|решает|отвечает|через|сразу) (?:\w+ )?(?:менеджер|администратор|админ|руководител|управляющ|человек|сотрудник|старш)\w*"
)
_BOT_RULE = re.compile(r"бот (?:\w+ )?(?:не|никогда не) \w+|не (?:отвечает|отвечать|обсуждает|обсуждать|подтверждает|подтверждать) сам")
_NAMED_AFTER = re.compile(r"\b(?:про|о|об|насчет|по поводу|касательно|по теме|по вопросам?) ((?:\w+ ){0,2}\w+)")
_SUBJECT_END = re.compile(r"\s[—–-]\s|:|\(")
_LISTED = re.compile(r"\(([^)]{2,200})\)")
_LIST_MARK = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
_GENERIC_WORDS = (
    "любые любой любая вопросы вопрос вопросам вопросах все всё всех такие такой это этот эти клиент клиента клиенты клиентов "
    "бот бота боту менеджер менеджеру менеджера администратор администратору администратора человек человеку нам нас наш "
    "наши ваш ваши их его ее её тему темы теме разные другие эскалация эскалации сразу только и или а но в на с по за для "
    "заказ заказы услуга услуги обслуживание работа запись время салон салона мастер мастера никогда сам сама"
)
_NOT_A_TOPIC = frozenset(normalise(word) for word in _GENERIC_WORDS.split())
_STEMMER = snowballstemmer.stemmer("russian")


@dataclass(frozen=True)
class Topic:
    key: str
    label: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class Policy:
    """What a policy document says, as the bot uses it."""

    topics: frozenset[str]  # default topics its rules name
    keywords: tuple[str, ...]  # stems ("гаранти*") its rules add
    rules: tuple[str, ...]  # the lines that send something to a person
    lines: tuple[str, ...]  # every line (instructions for the model; never to be repeated to a customer)


@dataclass(frozen=True)
class Guard:
    """The sensitive topics of one client, and its policy's lines (for leaks())."""

    topics: tuple[Topic, ...]
    policy_lines: tuple[str, ...] = ()

    @property
    def labels(self) -> list[str]:
        return [topic.label for topic in self.topics]


NO_GUARD = Guard(())


def _pattern(words: str) -> re.Pattern[str]:
    """Stems ("оплат*") and phrases ("кормлю_грудью") as one regex over normalised text."""
    parts = []
    for word in words.split():
        stem = word.endswith("*")
        phrase = normalise(word.rstrip("*").replace("_", " "))
        if phrase:
            parts.append(re.escape(phrase) + (r"\w*" if stem else r"\b"))
    return re.compile(r"\b(?:" + "|".join(parts) + ")") if parts else re.compile(r"(?!)")


_DEFAULT_TOPICS = {key: Topic(key, label, _pattern(words)) for key, (label, words) in _DEFAULTS.items()}


def find(text: str, guard: Guard) -> Topic | None:
    """The first sensitive topic the text touches, if any."""
    if not guard.topics or not text.strip():
        return None
    norm = normalise(text)
    return next((topic for topic in guard.topics if topic.pattern.search(norm)), None)


# A topic about what the customer feels, not something an answer can stray into ("исправить" in a reply is help).
_CUSTOMER_ONLY = frozenset({"complaint"})


def find_in_answer(text: str, guard: Guard) -> Topic | None:
    """The sensitive topic an answer of the bot strays into (payment methods, contraindications, ...)."""
    return find(text, Guard(tuple(t for t in guard.topics if t.key not in _CUSTOMER_ONLY), guard.policy_lines))


def guard_for(settings: ClientSettings, policy_text: str) -> Guard:
    """The client's topics: its chosen defaults, those its policy names, and the keywords of both."""
    return _guard(tuple(settings.sensitive_topics), tuple(settings.sensitive_keywords), policy_text)


@lru_cache(maxsize=256)
def _guard(keys: tuple[str, ...], keywords: tuple[str, ...], policy_text: str) -> Guard:
    policy = read_policy(policy_text)
    topics = [_DEFAULT_TOPICS[key] for key in DEFAULT_SENSITIVE_TOPICS if key in keys or key in policy.topics]
    extra = (*keywords, *policy.keywords)
    if extra:
        topics.append(Topic("custom", "темы из правил компании", _pattern(" ".join(w.replace(" ", "_") for w in extra))))
    return Guard(tuple(topics), policy.lines)


@lru_cache(maxsize=64)
def read_policy(text: str) -> Policy:
    """The rules, topics and keywords of a policy document (see the module docstring)."""
    lines = [_LIST_MARK.sub("", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    rules, topics, keywords = [], set(), []
    for line in lines:
        norm = normalise(line)
        if not _HANDOFF.search(norm):
            continue
        rules.append(line)
        named = {key for key, topic in _DEFAULT_TOPICS.items() if topic.pattern.search(norm)}
        topics |= named
        if named:
            continue  # the default topic's own words cover it; its examples would also catch ordinary questions
        # A topic of the business's own: what the rule names ("о гарантии ..."), or its subject before the
        # dash ("Подарочные сертификаты — ..."), and the examples it lists in parentheses.
        named_after = _NAMED_AFTER.findall(norm)
        if named_after:
            keywords += [words[0] for words in map(_keywords, named_after) if words]
        else:
            keywords += _keywords(_SUBJECT_END.split(line, maxsplit=1)[0])
        for listed in _LISTED.findall(line):
            keywords += _keywords(listed)
    return Policy(frozenset(topics), tuple(dict.fromkeys(keywords)), tuple(rules), tuple(lines))


def _keywords(phrase: str) -> list[str]:
    """The meaningful words of a phrase as short stems: "Подарочные сертификаты" -> ["подароч*", "сертифи*"]."""
    found = []
    for word in normalise(phrase).split():
        if word in _NOT_A_TOPIC or len(word) < 3 or word.isdigit():
            continue
        stem = _STEMMER.stemWord(word)[:7]
        found.append(f"{stem}*" if len(stem) >= 4 else word)
    return found


def is_rule(text: str) -> bool:
    """Text that reads like an instruction to the bot or staff, not something to tell a customer."""
    norm = normalise(text)
    return bool(_HANDOFF.search(norm) or _BOT_RULE.search(norm))


def leaks(reply: str, guard: Guard, words: int = 6) -> bool:
    """Whether the reply repeats a policy line (any run of `words` consecutive words of one)."""
    if not guard.policy_lines:
        return False
    said = f" {normalise(reply)} "
    for line in guard.policy_lines:
        tokens = normalise(line).split()
        if len(tokens) < words:
            if len(tokens) >= 3 and f" {' '.join(tokens)} " in said:
                return True
            continue
        if any(f" {' '.join(tokens[i : i + words])} " in said for i in range(len(tokens) - words + 1)):
            return True
    return False
