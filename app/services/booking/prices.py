"""Prices are never invented: an answer of the model that states a price is checked against the client's services
list. Pure.

A client without a services list keeps its knowledge base as the word on prices (the model is grounded in it).
With a list, each sentence of the answer with an amount of money in it ("8000 тг", "5 тыс", "стоит 7000") is read:
- the amount belongs to the listed service the sentence names (the nearest one before it), or, when the sentence
  names none, to the one service the answer or the customer's question is about;
- an amount the list does not give for that service is replaced by the list's price; a listed service without a
  price in the list gets no price at all ("уточню у администратора");
- an amount that belongs to no listed service (a service the list does not have, or several in doubt) is never
  sent: the sentence is replaced by the list's lines for the services in doubt, or by "уточню у администратора".
"""

import re
from dataclasses import dataclass

from app.services.booking.catalog import Catalog, Entry

UNKNOWN_PRICE = "Точную стоимость уточню у администратора."
_SENTENCE = re.compile(r"(?<=[.!?…])\s+|\n+")
_AMOUNT = re.compile(
    r"(?<![\d:.,/])(?P<number>\d{1,3}(?:[ \u00a0\u202f]\d{3})+|\d+)(?:[.,]\d+)?"
    r"(?:\s*(?P<thousands>тыс|тысяч\w*|к)(?![\w]))?"
    r"(?:\s*(?P<currency>тг|тенге|₸|kzt|tg))?(?![\w:])",
    re.IGNORECASE,
)
_PRICE_WORDS = re.compile(r"сто(?:ит|им|ят)|цен[аеуы]|прайс|обойд[её]тся|руб|бағ|тұрады|по \d|за \d|от \d", re.IGNORECASE)
_NOT_MONEY_AFTER = re.compile(r"^\s*(?:мин|час|ч\b|дн|дня|лет|год|раз|%|человек|шт|см|мм|мл|г\b|кг|процедур|сеанс)", re.IGNORECASE)


@dataclass(frozen=True)
class Checked:
    text: str
    corrected: bool = False  # a wrong price of a listed service was replaced by the list's
    unlisted: bool = False  # a price the list does not give was taken out: a person has to answer it


def check(reply: str, *, catalog: Catalog, question: str) -> Checked:
    """The answer with every price it states made the list's (see the module docstring)."""
    if not catalog or not _amounts(reply):
        return Checked(reply)  # without a list the knowledge base is the client's word on prices
    about = _about(catalog, reply, question)
    corrected = unlisted = False
    out: list[str] = []
    pieces = _SENTENCE.split(reply)
    separators = _SENTENCE.findall(reply)
    for index, sentence in enumerate(pieces):
        fixed, was_corrected, was_unlisted = _sentence(sentence, catalog, about)
        corrected |= was_corrected
        unlisted |= was_unlisted
        out.append(fixed + (separators[index] if index < len(separators) else ""))
    return Checked(_dedupe("".join(out)), corrected, unlisted)


def _about(catalog: Catalog, reply: str, question: str) -> list[Entry]:
    """The services the answer is about: those the answer names, else those the customer asked about."""
    named = [entry for _, entry in catalog.mentions(reply)]
    return named or catalog.find(question)


def _sentence(sentence: str, catalog: Catalog, about: list[Entry]) -> tuple[str, bool, bool]:
    amounts = list(_amounts(sentence))
    if not amounts:
        return sentence, False, False
    mentions = catalog.mentions(sentence)
    if not mentions and len(about) != 1:
        if about:  # several services in doubt: their lines, from the list
            return "; ".join(entry.line for entry in about) + ".", True, False
        return UNKNOWN_PRICE, False, True
    owners = []
    for match in amounts:
        before = [entry for at, entry in mentions if at < match.start()]
        owners.append(before[-1] if before else mentions[0][1] if mentions else about[0])
    wrong = [(match, entry) for match, entry in zip(amounts, owners, strict=True) if not entry.allows(_value(match))]
    if not wrong:
        return sentence, False, False
    unpriced = next((entry for _, entry in wrong if entry.price_text is None), None)
    if unpriced is not None:
        return f"Стоимость услуги «{unpriced.name}» уточню у администратора.", False, True
    if any(owners.count(entry) > 1 or entry.price_max for _, entry in wrong):  # "от 9000 до 20000": say the list's line
        lines = list(dict.fromkeys(entry.line for entry in owners))
        return "; ".join(lines) + ".", True, False
    result = sentence
    for match, entry in reversed(wrong):
        result = result[: match.start()] + (entry.price_text or "") + result[match.end() :]
    return result, True, False


def _amounts(text: str) -> list[re.Match[str]]:
    """The amounts of money in the text: with a currency or "тыс", or any number of 100 or more in a sentence
    about a price (not minutes, hours, a date or a time)."""
    priced = _PRICE_WORDS.search(text) is not None
    found = []
    for match in _AMOUNT.finditer(text):
        if (
            match.group("currency")
            or (match.group("thousands") and match.group("thousands") != "к")
            or (match.group("thousands") and priced)
        ) or (priced and _value(match) >= 100 and not _NOT_MONEY_AFTER.match(text[match.end() :])):
            found.append(match)
    return found


def _value(match: re.Match[str]) -> int:
    number = int(re.sub(r"\D", "", match.group("number")))
    return number * 1000 if match.group("thousands") else number


def _dedupe(text: str) -> str:
    """One "уточню у администратора" is enough."""
    first = text.find(UNKNOWN_PRICE)
    if first < 0:
        return text
    head, tail = text[: first + len(UNKNOWN_PRICE)], text[first + len(UNKNOWN_PRICE) :]
    return head + tail.replace(" " + UNKNOWN_PRICE, "").replace(UNKNOWN_PRICE, "")
