"""The booking conversation: what the bot says to a customer who wants to book, one short question at a time,
taking everything said in one message at once. Pure: the turn (conversation/turn.py) gives it the request so far
and what the customer said, and applies the step it returns (apply.py).

- A request starts on "запишите", "жазылайын", "zapishite", or a when with "можно / хочу / есть окошко" ("можно
  на завтра к 15?"), or when the answering model says the customer wants to book.
- It collects, in this order, what the client requires (booking_required): the service (matched against the
  client's services list; the customer's words kept when nothing matches), the day and time (when.py: a past or
  closed time is asked again), the name (WhatsApp's name proposed once: "да" takes it). Then it goes to the
  managers (SUBMITTED).
- "отмена", "потом", "передумала" stop it politely; a question in the middle ("а сколько стоит?") is answered
  first (answer_first) and the question the bot was waiting on is asked again.
- A manager's proposal of another time is accepted with "да"; "нет" asks for a time; another time goes back to
  the managers.
"""

import re
import uuid
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum

from app.models import BookingField
from app.schemas.client import BookingRequirement, ClientSettings
from app.services import hours
from app.services.booking import texts, when
from app.services.booking.catalog import Catalog, Entry
from app.utils.text import latin_to_cyrillic


class Outcome(StrEnum):
    COLLECTING = "collecting"  # asked the next question
    SUBMITTED = "submitted"  # everything is known: to the managers
    CANCELLED = "cancelled"  # the customer stopped it
    ACCEPTED = "accepted"  # the customer said "да" to a manager's proposal


@dataclass(frozen=True)
class Draft:
    """A booking request as far as it is known."""

    service_id: uuid.UUID | None = None
    service_name: str | None = None
    day: date | None = None  # said without a time yet
    at: datetime | None = None
    name: str | None = None
    asking: BookingField | None = None
    proposed_at: datetime | None = None  # a manager's proposal waiting for the customer's answer


@dataclass(frozen=True)
class Hint:
    """The answering model's reading of the turn (its structured output): the customer wants to book this."""

    service: str = ""
    when: str = ""
    name: str = ""


@dataclass(frozen=True)
class Heard:
    """What the customer said this turn, as the turn read it."""

    text: str
    yes_no: bool | None = None  # a plain "да" / "нет"
    question: bool = False  # the intent rules read a question
    hint: Hint | None = None


@dataclass(frozen=True)
class Context:
    now: datetime
    schedule: hours.Schedule
    catalog: Catalog
    settings: ClientSettings
    sender_name: str | None = None  # the customer's WhatsApp name


@dataclass(frozen=True)
class Step:
    outcome: Outcome
    draft: Draft
    reply: str  # what the bot says about the booking
    answer_first: bool = False  # the customer also asked something: answer it before `reply`
    retimed: bool = False  # the customer answered a manager's proposal with another time


def _norm(text: str) -> str:
    lowered = text.lower().replace("ё", "е")
    return latin_to_cyrillic(lowered) if re.search(r"[a-z]", lowered) else lowered


_BOOK = re.compile(r"\b(?:запиш|записа|записат|запись|забронир|брон[ьи]|жазыл|жазып|жазсаңыз|жазыңыз|тіркел)\w*")
# A booking the customer already has ("у меня запись на завтра, во сколько приходить?"): not a new request
_HAVE = re.compile(
    r"\b(?:у меня|моя|мою|моей|мой|по|насчет|насчёт)\s+(?:есть\s+|уже\s+|была\s+)?запис\w*|\b(?:я|мы)\s+(?:уже\s+)?записан\w*|"
    r"\bменя\s+(?:уже\s+)?записал\w*|\bжазылғанмын|\bжазылып қойдым|\bжазылып едім"
)
_WISH = re.compile(
    r"\b(?:можно|хочу|хотела?|хотим|есть|свободн\w*|окошк\w*|окно|окна|приду|прийти|подойти|подъеду|бола ма|болады ма|бар ма|"
    r"келсем|келуге|барсам)\b"
)
_CANCEL = re.compile(
    r"^\s*(?:нет,?\s+)?(?:отмена|отмените|отменить|отменяю|не надо|не нужно|потом|позже|передумал\w*|не буду|в другой раз|не хочу|"
    r"уже не надо|стоп|керек емес|қажет емес|кейін|кейінірек|ойымнан айн\w*|болдырма\w*|жоқ рахмет)\b"
)
_INFO = re.compile(
    r"сколько|стоит|стоимост|цен[аыу]\b|цены|прайс|почем|где\b|адрес|как долго|длится|какие|что входит|оплат|парков|"
    r"қанша|баға|қайда|қалай|қандай|мекенжай"
)
_PRICE = re.compile(r"сколько|стоит|стоимост|цен[аыу]\b|цены|прайс|почем|қанша|баға")
_NAME_SAID = re.compile(r"(?:меня зовут|моё имя|мое имя|это|атым|есімім|мені)\s+([^\W\d_]{2,30})", re.IGNORECASE)
_NAME_AFTER_COMMA = re.compile(r",\s*([A-ZА-ЯЁӘҒҚҢӨҰҮҺІ][^\W\d_]{1,29})\s*[.!)]*\s*$")
_FREE_SERVICE = re.compile(
    r"(?:запиш\w*|записат\w*|записаться|хочу|хотела?|можно)\s+(?:меня\s+|нас\s+)?(?:на|к)\s+([^\W\d_][^\W\d_ -]{2,40}?)"
    r"(?=\s*[,.!?]|\s+(?:завтра|сегодня|послезавтра|в|во|к|на|после|через|утром|вечером|пожалуйста)\b|\s*$)"
)
_NOT_A_SERVICE = re.compile(r"^(?:да|нет|ок|окей|хорошо|спасибо|рахмет|иә|жоқ|ага|угу|ладно|понятно|можно|давайте)\b")


def wants_booking(text: str, *, now: datetime) -> bool:
    """A booking request in the customer's words: a booking word, or a day or time with "можно / хочу / есть";
    never words about a booking they already have."""
    norm = _norm(text)
    if _HAVE.search(norm):
        return False
    if _BOOK.search(norm):
        return True
    return bool(_WISH.search(norm)) and when.read(text, now=now).anything


def step(draft: Draft | None, heard: Heard, ctx: Context) -> Step | None:
    """The next step of the booking conversation; None when this turn is not about a booking."""
    if draft is None:
        if heard.hint is None and not wants_booking(heard.text, now=ctx.now):
            return None
        draft = Draft()
        new = True
    else:
        new = False
        if draft.proposed_at is not None:
            return _on_proposal(draft, heard, ctx)
        if _stops(heard, draft):
            return Step(Outcome.CANCELLED, draft, texts.say(ctx.settings, "cancelled"))
    answer_first = heard.question and bool(_INFO.search(_norm(heard.text)))
    draft = _service(draft, heard, ctx, new=new)
    draft, problem = _time(draft, heard, ctx, quiet=answer_first)
    draft = _name(draft, heard, ctx)
    return _next(draft, problem, ctx, answer_first)


def asks_price(text: str) -> bool:
    return bool(_PRICE.search(_norm(text)))


def list_answer(text: str, *, catalog: Catalog, draft: Draft | None) -> str | None:
    """A price question answered from the services list itself: the lines of the services it names (or the one
    being booked)."""
    if not catalog or not asks_price(text):
        return None
    found = catalog.find(text) or ([e] if draft and (e := catalog.get(draft.service_id)) else [])
    return "\n".join(entry.line for entry in found) or None


def _stops(heard: Heard, draft: Draft) -> bool:
    if _CANCEL.search(_norm(heard.text)):
        return True
    return heard.yes_no is False and draft.asking in (BookingField.SERVICE, BookingField.TIME)


def _on_proposal(draft: Draft, heard: Heard, ctx: Context) -> Step | None:
    assert draft.proposed_at is not None
    if _CANCEL.search(_norm(heard.text)):
        return Step(Outcome.CANCELLED, replace(draft, proposed_at=None), texts.say(ctx.settings, "cancelled"))
    if heard.yes_no is True:
        accepted = replace(draft, at=draft.proposed_at, day=draft.proposed_at.date(), proposed_at=None, asking=None)
        return Step(Outcome.ACCEPTED, accepted, _confirmed(ctx.settings, accepted))
    said = when.read(heard.text, now=ctx.now)
    if said.anything:
        retimed, problem = _time(replace(draft, proposed_at=None, at=None, day=None), heard, ctx, quiet=False)
        return replace(_next(retimed, problem, ctx, answer_first=False), retimed=True)
    if heard.yes_no is False:
        return Step(
            Outcome.COLLECTING,
            replace(draft, proposed_at=None, at=None, day=None, asking=BookingField.TIME),
            texts.say(ctx.settings, "proposal_declined"),
        )
    return None


def _service(draft: Draft, heard: Heard, ctx: Context, *, new: bool) -> Draft:
    entry: Entry | None = ctx.catalog.best(heard.text)
    if entry is None and heard.hint and heard.hint.service:
        entry = ctx.catalog.best(heard.hint.service)
    if entry is not None:
        return replace(draft, service_id=entry.id, service_name=entry.name)
    if draft.service_name:
        return draft
    free = None
    if draft.asking == BookingField.SERVICE and heard.yes_no is None and not when.read(heard.text, now=ctx.now).anything:
        free = heard.text.strip(" .,!?")
    elif heard.hint and heard.hint.service:
        free = heard.hint.service
    elif new:
        match = _FREE_SERVICE.search(_norm(heard.text))
        if match and not when.read(match.group(1), now=ctx.now).anything:
            free = match.group(1)
    if free and len(free) >= 3 and not _NOT_A_SERVICE.match(_norm(free)):
        return replace(draft, service_name=free[:200])
    return draft


def _time(draft: Draft, heard: Heard, ctx: Context, *, quiet: bool) -> tuple[Draft, str | None]:
    """The day and time said, checked; what to say when it cannot be booked (or was not understood)."""
    said = when.read(heard.text, now=ctx.now)
    if not said.anything and heard.hint and heard.hint.when:
        said = when.read(heard.hint.when, now=ctx.now)
    if not said.anything:
        if draft.asking == BookingField.TIME and not quiet and heard.yes_no is None:
            return draft, texts.say(ctx.settings, "time_unclear")
        return draft, None
    known_day = draft.day or (draft.at.astimezone(ctx.schedule.tz).date() if draft.at else None)
    moment = when.resolve(said, now=ctx.now, schedule=ctx.schedule, day=known_day)
    if moment is None:
        return replace(draft, day=said.day, at=None), None
    problem = when.check(moment, now=ctx.now, schedule=ctx.schedule)
    if problem == when.Problem.PAST:
        return replace(draft, at=None), texts.say(ctx.settings, "time_past")
    if problem == when.Problem.CLOSED:
        text = texts.say(
            ctx.settings, "time_closed", when=texts.capitalised(texts.at_moment(moment)), hours=hours.describe_week(ctx.schedule)
        )
        return replace(draft, at=None, day=said.day or draft.day), text
    return replace(draft, at=moment, day=moment.date()), None


def _name(draft: Draft, heard: Heard, ctx: Context) -> Draft:
    if draft.asking == BookingField.NAME:
        if heard.yes_no is True and ctx.sender_name:
            return replace(draft, name=ctx.sender_name)
        if heard.yes_no is None:
            answer = heard.text.strip(" .,!?")
            said = _NAME_SAID.search(answer)
            if said:
                return replace(draft, name=said.group(1).title())
            if 0 < len(answer.split()) <= 3 and re.fullmatch(r"[^\W\d_][^\W\d_ -]*", answer):
                return replace(draft, name=answer.title()[:200])
        return draft
    said = _NAME_SAID.search(heard.text) or _NAME_AFTER_COMMA.search(heard.text)
    if said and not ctx.catalog.best(said.group(1)) and not when.read(said.group(1), now=ctx.now).anything:
        return replace(draft, name=said.group(1).title())
    if heard.hint and heard.hint.name and heard.hint.name.lower() in heard.text.lower():
        return replace(draft, name=heard.hint.name.strip().title()[:200])
    return draft


def _next(draft: Draft, problem: str | None, ctx: Context, answer_first: bool) -> Step:
    """The next question, or the request complete."""
    required = set(ctx.settings.booking_required)
    if problem is not None:
        return Step(Outcome.COLLECTING, replace(draft, asking=BookingField.TIME), problem, answer_first)
    if BookingRequirement.SERVICE in required and not draft.service_name:
        names = ctx.catalog.names()
        examples = f" Например: {', '.join(n.lower() for n in names)}." if names else ""
        reply = texts.say(ctx.settings, "ask_service", examples=examples)
        return Step(Outcome.COLLECTING, replace(draft, asking=BookingField.SERVICE), reply, answer_first)
    if draft.at is None:
        if draft.day is not None:
            reply = texts.say(ctx.settings, "ask_time_on_day", day=texts.on_day(draft.day))
        else:
            reply = texts.say(ctx.settings, "ask_time")
        return Step(Outcome.COLLECTING, replace(draft, asking=BookingField.TIME), reply, answer_first)
    if not draft.name:
        if BookingRequirement.NAME in required:
            if ctx.sender_name and draft.asking != BookingField.NAME:
                reply = texts.say(ctx.settings, "ask_name_proposed", name=ctx.sender_name)
            else:
                reply = texts.say(ctx.settings, "ask_name")
            return Step(Outcome.COLLECTING, replace(draft, asking=BookingField.NAME), reply, answer_first)
        draft = replace(draft, name=ctx.sender_name)
    done = replace(draft, asking=None)
    return Step(Outcome.SUBMITTED, done, texts.say(ctx.settings, "submitted", summary=summary(done)), answer_first)


def summary(draft: Draft) -> str:
    """ "маникюр, в субботу, 6 декабря, в 15:00, Айгерим" """
    parts = [draft.service_name.lower() if draft.service_name else None]
    parts.append(texts.at_moment(draft.at) if draft.at else None)
    parts.append(draft.name)
    return ", ".join(p for p in parts if p)


def _confirmed(settings: ClientSettings, draft: Draft) -> str:
    assert draft.at is not None
    return texts.say(settings, "confirmed", service=texts.service_accusative(draft.service_name), when=texts.at_moment(draft.at))


def confirmed_text(settings: ClientSettings, draft: Draft) -> str:
    """What the customer is told when the booking is confirmed: "Вы записаны на маникюр в субботу, 6 декабря, в 15:00"."""
    return _confirmed(settings, draft)
