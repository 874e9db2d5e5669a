"""Every fixed text the customer can receive, in one place so wording is reviewed and changed together."""

FALLBACK_RESPONSES = {
    "ai_error": "Извините, произошла ошибка. Передаю менеджеру.",
    "no_knowledge": "К сожалению, не нашёл информацию. Уточню у коллег.",
    "telegram_error": "Не удалось отправить в Telegram. Попробуем позже.",
    "whatsapp_error": "Не удалось отправить сообщение.",
}

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

# The customer's "no": the bot steps back.
OPT_OUT_ACK = "Хорошо, больше не буду писать. Если понадоблюсь — просто напишите."

# Media and voice notes.
VOICE_NOT_RECOGNISED = "Не удалось распознать голосовое, напишите, пожалуйста, текстом."
MEDIA_RECEIVED = "Спасибо, файл получили. Напишите, пожалуйста, текстом, чем мы можем помочь."

# Limits (services/operations/limits.py): said at most once an hour, and only what is true: the messages are stored.
RATE_LIMITED = (
    "Сообщения сохранены, но их сейчас слишком много, чтобы ответить на каждое. Пожалуйста, напишите вопрос одним сообщением чуть позже."
)
VOICE_UNAVAILABLE = "Сейчас не могу прослушать голосовое сообщение. Напишите, пожалуйста, текстом."
ESCALATION_LIMITED = (
    "Сегодня ваш запрос уже несколько раз передавали менеджерам, поэтому повторно не отправляю. "
    "Напишите вопрос здесь — я постараюсь помочь."
)
