"""Every fixed text the customer can receive, in one place so wording is reviewed and changed together."""

FALLBACK_RESPONSES = {
    "ai_error": "Извините, произошла ошибка. Передаю менеджеру.",
    "no_knowledge": "К сожалению, не нашёл информацию. Уточню у коллег.",
    "telegram_error": "Не удалось отправить в Telegram. Попробуем позже.",
    "whatsapp_error": "Не удалось отправить сообщение.",
}

# Answered when no language model is configured and nothing else can answer.
NOT_CONFIGURED = "Здравствуйте! Сейчас я не могу ответить сам. Передам ваш вопрос коллегам, вам ответят."
