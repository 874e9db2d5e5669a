"""Every fixed text the customer can receive, in one place so wording is reviewed and changed together."""

from datetime import datetime

FALLBACK_RESPONSES = {
    "ai_error": "Извините, произошла ошибка. Передаю менеджеру.",
    "no_knowledge": "К сожалению, не нашёл информацию. Уточню у коллег.",
    "telegram_error": "Не удалось отправить в Telegram. Попробуем позже.",
    "whatsapp_error": "Не удалось отправить сообщение.",
}

# No manager can be told (the client has no Telegram group or bot yet): the bot never promises one.
NO_MANAGER = "Извините, сейчас не могу передать ваш вопрос менеджеру в этом чате. Пожалуйста, напишите нам позже."
NO_KNOWLEDGE_ALONE = "К сожалению, не нашёл ответа на ваш вопрос. Попробуйте, пожалуйста, сформулировать его иначе."

# Offline mode (no language model): a greeting gets a greeting.
GREETING = "Здравствуйте! Чем могу помочь?"

# Escalation: said once, only after the handover exists.
HANDOVER_ACK = "Передаю ваш вопрос менеджеру — свяжется в ближайшее время."
HANDOVER_ACK_FRUSTRATION = "Простите, что так вышло. Уже передаю ваш вопрос менеджеру — он свяжется с вами в ближайшее время."
HANDOVER_ALREADY = "Менеджер уже получил ваш запрос и скоро ответит."
MANAGER_JOINED = "Вам отвечает менеджер {name}."
HANDOVER_TIMEOUT = (
    "Извините, менеджеры сейчас не успели ответить. Я снова на связи и постараюсь помочь, а ваш вопрос коллеги увидят в истории."
)
# A taken handover closed after a long silence: the customer's last message went unanswered, or the talk just ended.
HANDOVER_CLOSED_UNANSWERED = (
    "Извините, менеджер так и не смог ответить на ваше последнее сообщение. Я снова на связи и постараюсь помочь, "
    "а если нужен человек — напишите «менеджер»."
)
HANDOVER_CLOSED_QUIET = (
    "Диалог с менеджером завершён. Если появятся вопросы — пишите, я на связи и при необходимости снова позову менеджера."
)

# The customer's "no": the bot steps back.
OPT_OUT_ACK = "Хорошо, больше не буду писать. Если понадоблюсь — просто напишите."

# Media and voice notes.
VOICE_NOT_RECOGNISED = "Не удалось распознать голосовое, напишите, пожалуйста, текстом."
MEDIA_RECEIVED = "Спасибо, файл получили. Напишите, пожалуйста, текстом, чем мы можем помочь."

# A sensitive topic (payment, contraindications, ...): a person answers.
HANDOVER_ACK_SENSITIVE = "По этому вопросу вам ответит администратор — уже передал ему, он свяжется с вами в ближайшее время."

# The knowledge base has nothing (no_knowledge_policy=clarify_then_offer): ask once, then offer a manager.
CLARIFY = "Уточните, пожалуйста, что именно вас интересует: услуга, цена, время или что-то другое? Так я найду точный ответ."
OFFER_MANAGER = "К сожалению, не нашёл ответа на ваш вопрос. Подключить менеджера? Ответьте да или нет."
OFFER_DECLINED = "Хорошо! Если появятся другие вопросы — пишите, я на связи."

# Out of business hours nobody answers "soon": these say when instead ({when}: "завтра с 10:00").
AFTER_HOURS = {
    HANDOVER_ACK: "Передаю ваш вопрос менеджеру. Сейчас мы не работаем — ответим {when}.",
    HANDOVER_ACK_FRUSTRATION: "Простите, что так вышло. Передаю ваш вопрос менеджеру. Сейчас мы не работаем — ответим {when}.",
    HANDOVER_ACK_SENSITIVE: "По этому вопросу вам ответит администратор — уже передал ему. Сейчас мы не работаем — ответим {when}.",
    HANDOVER_ALREADY: "Менеджер уже получил ваш запрос и ответит {when}.",
    FALLBACK_RESPONSES["no_knowledge"]: "К сожалению, не нашёл информацию. Уточню у коллег — ответим {when}.",
    FALLBACK_RESPONSES["ai_error"]: "Извините, произошла ошибка. Передаю менеджеру — ответим {when}.",
}
WAITING_AFTER_HOURS = "Сейчас мы не работаем — менеджер ответит {when}."
_WHEN_UNKNOWN = "в рабочее время"
_WEEKDAYS_ON = ("в понедельник", "во вторник", "в среду", "в четверг", "в пятницу", "в субботу", "в воскресенье")


def in_hours(text: str, *, open_now: bool, when: str | None) -> str:
    """`text` while the business is open; out of hours its variant that says when a manager answers."""
    if open_now or text not in AFTER_HOURS:
        return text
    return AFTER_HOURS[text].format(when=when or _WHEN_UNKNOWN)


def opening(at: datetime, now: datetime) -> str:
    """When the business opens, as a customer reads it: "сегодня с 10:00", "завтра с 10:00", "в понедельник с 10:00"."""
    days = (at.date() - now.date()).days
    day = "сегодня" if days == 0 else "завтра" if days == 1 else _WEEKDAYS_ON[at.weekday()] if days < 7 else f"{at:%d.%m}"
    return f"{day} с {at:%H:%M}"


# Limits (services/operations/limits.py): said at most once an hour, and only what is true: the messages are stored.
RATE_LIMITED = (
    "Сообщения сохранены, но их сейчас слишком много, чтобы ответить на каждое. Пожалуйста, напишите вопрос одним сообщением чуть позже."
)
VOICE_UNAVAILABLE = "Сейчас не могу прослушать голосовое сообщение. Напишите, пожалуйста, текстом."
ESCALATION_LIMITED = (
    "Сегодня ваш запрос уже несколько раз передавали менеджерам, поэтому повторно не отправляю. "
    "Напишите вопрос здесь — я постараюсь помочь."
)
