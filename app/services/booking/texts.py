"""What the customer reads about a booking: each text a client may reword (booking_texts), and the moment and the
service written the way a person says them ("в субботу, 6 декабря, в 15:00", "на стрижку"). Pure."""

from datetime import date, datetime

from app.schemas.client import ClientSettings

DEFAULTS: dict[str, str] = {
    "ask_service": "На какую услугу вас записать?{examples}",
    "ask_time": "На какой день и время вас записать?",
    "ask_time_on_day": "На какое время {day}?",
    "time_unclear": "Не понял дату и время. Напишите, пожалуйста, например: «завтра в 15:00» или «в субботу в 11».",
    "time_past": "Это время уже прошло. На какой день и время вас записать?",
    "time_closed": "{when} мы не работаем (график: {hours}). Выберите, пожалуйста, другое время.",
    "ask_name": "Как к вам обращаться?",
    "ask_name_proposed": "Как к вам обращаться — {name}?",
    "submitted": "Спасибо! Передал заявку администратору: {summary}. Как только подтвердит — напишу вам.",
    "confirmed": "Вы записаны на {service} {when}. Ждём вас!",
    "declined": "К сожалению, {when} записать не получается. Напишите, пожалуйста, другое удобное время — передам администратору.",
    "proposal": (
        "Администратор предлагает другое время: {when}. Подходит? Ответьте «да» — и я запишу вас, или напишите, какое время удобно вам."
    ),
    "proposal_declined": "Хорошо. Напишите, пожалуйста, какое время вам удобно.",
    "cancelled": "Хорошо, не записываю. Если передумаете — просто напишите.",
}

_ON_DAY = ("в понедельник", "во вторник", "в среду", "в четверг", "в пятницу", "в субботу", "в воскресенье")
_SHORT_DAY = ("пн", "вт", "ср", "чт", "пт", "сб", "вс")
_MONTHS = ("января", "февраля", "марта", "апреля", "мая", "июня", "июля", "августа", "сентября", "октября", "ноября", "декабря")
NO_SERVICE = "приём"


def say(settings: ClientSettings, key: str, **values: str) -> str:
    """The client's wording of a text (its own, else the default) with the values filled in; a client's text that
    names a value it is not given keeps the default instead of failing."""
    own = settings.booking_texts.get(key)
    if own:
        try:
            return own.format(**values)
        except (KeyError, IndexError, ValueError):
            pass
    return DEFAULTS[key].format(**values)


def on_day(day: date) -> str:
    """ "в субботу, 6 декабря" """
    return f"{_ON_DAY[day.weekday()]}, {day.day} {_MONTHS[day.month - 1]}"


def at_moment(moment: datetime) -> str:
    """ "в субботу, 6 декабря, в 15:00" (the moment in the client's time zone)."""
    return f"{on_day(moment.date())}, в {moment:%H:%M}"


def short_moment(moment: datetime) -> str:
    """ "сб, 6 декабря, 15:00", for managers."""
    return f"{_SHORT_DAY[moment.weekday()]}, {moment.day} {_MONTHS[moment.month - 1]}, {moment:%H:%M}"


def service_accusative(name: str | None) -> str:
    """The service after "на": "маникюр", "стрижку женскую"; "приём" without one."""
    if not name:
        return NO_SERVICE
    words = name.strip().split()
    out = [words[0][:1].lower() + words[0][1:], *words[1:]]
    for index, word in enumerate(out[:2]):
        if word.endswith("ая"):
            out[index] = word[:-2] + "ую"
        elif word.endswith("а") and len(word) > 3:
            out[index] = word[:-1] + "у"
        elif word.endswith("я") and len(word) > 3:
            out[index] = word[:-1] + "ю"
    return " ".join(out)


def capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]
