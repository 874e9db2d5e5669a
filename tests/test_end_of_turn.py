"""End-of-turn detection: how long the bot waits for the customer to go on writing."""

import time

import pytest

from app.services.conversation import end_of_turn
from app.services.conversation.end_of_turn import LONG_FACTOR, SHORT_FACTOR, wait_seconds

BASE = 10.0
ONE_GO = "Добрый день, хотела бы записаться на маникюр с покрытием гель-лаком к мастеру Айгуль на эту субботу после обеда, если можно"
ONE_GO_CUT = "я хочу записаться на маникюр с покрытием и дизайном к мастеру Айгуль в эту субботу после обеда, если есть свободное время и"
BURST = ["Здравствуйте", "хочу записаться на маникюр с покрытием гель-лаком", "и на педикюр тоже, к тому же самому мастеру"]
SHORT = SHORT_FACTOR * BASE
LONG = LONG_FACTOR * BASE

# (message_type, text, previous texts of the turn, expected wait) -- one block per row of the module's table.
TABLE = [
    # 1 voice note
    ("audio", "", None, SHORT),
    ("audio", "подпись к голосовому,", None, SHORT),
    # 2 image / video / document without caption: the question usually follows
    ("image", "", None, LONG),
    ("video", "  ", None, LONG),
    ("document", "", None, LONG),
    # 3 other non-text without text
    ("sticker", "", None, BASE),
    ("location", "", None, BASE),
    # 4 emoji or bracket smileys only
    ("text", "👍", None, SHORT),
    ("text", ")))", None, SHORT),
    ("text", "🙏🏻❤️", None, SHORT),
    # 5 a question
    ("text", "А сколько стоит маникюр?", None, SHORT),
    ("text", "есть запись на завтра??", None, SHORT),
    ("text", "бағасы қанша?)", None, SHORT),
    ("image", "такой дизайн можно?", None, SHORT),
    ("text", "а можно на вечер, часов в 7?", None, SHORT),
    # 6 trailing ellipsis
    ("text", "я хотела спросить...", None, LONG),
    ("text", "ну вообще…", None, LONG),
    # 7 trailing comma or colon
    ("text", "Здравствуйте,", None, LONG),
    ("text", "у меня два вопроса:", None, LONG),
    ("text", "хочу записаться на маникюр, ", None, LONG),
    # 8 a conjunction or preposition at the end
    ("text", "хочу записаться на", None, LONG),
    ("text", "маникюр и", None, LONG),
    ("text", "подскажите что", None, LONG),
    ("text", "я бы хотела чтобы", None, LONG),
    ("text", "можно в", None, LONG),
    ("text", "а", None, LONG),
    ("text", "Но", None, LONG),
    ("text", "маникюр мен", None, LONG),
    ("text", "шаш алу және", None, LONG),
    ("text", "жазылғым келеді бірақ", None, LONG),
    ("text", "хочу прийти с 🙂", None, LONG),
    # 9 a lone greeting opening the turn
    ("text", "Привет", None, LONG),
    ("text", "Здравствуйте!", None, LONG),
    ("text", "добрый день)", None, LONG),
    ("text", "Сәлем", None, LONG),
    ("text", "Сәлеметсіз бе", None, LONG),
    ("text", "Здравствуйте", ["Айгуль"], BASE),  # not an opener any more
    ("text", "Здравствуйте, Айгуль", None, BASE),  # a greeting with more in it
    # 10 short answers
    ("text", "да", None, SHORT),
    ("text", "Нет", None, SHORT),
    ("text", "ок", None, SHORT),
    ("text", "Спасибо!", None, SHORT),
    ("text", "нет, спасибо", None, SHORT),
    ("text", "иә", None, SHORT),
    ("text", "жоқ", None, SHORT),
    ("text", "Рахмет)", None, SHORT),
    ("text", "хорошо, договорились", None, SHORT),
    ("text", "всё", None, SHORT),
    ("text", "да да да да", None, BASE),  # more than three words is no longer a plain answer
    # 11 a long message (> 120 characters)
    ("text", ONE_GO, None, SHORT),
    ("text", "x" * 121, None, SHORT),
    ("text", "x" * 120, None, BASE),
    ("text", ONE_GO_CUT, None, LONG),  # cut off, however long
    # 12 the last sentence of a long burst
    ("text", "На субботу после обеда.", BURST, SHORT),
    ("text", "На субботу после обеда", BURST, BASE),
    ("text", "На субботу после обеда.", ["Здравствуйте"], BASE),
    # 13 anything else
    ("text", "маникюр", None, BASE),
    ("text", "Хочу записаться на маникюр", None, BASE),
    ("text", "хочу на маникюр в субботу.", None, BASE),
]  # fmt: skip


@pytest.mark.parametrize(("message_type", "text", "previous", "expected"), TABLE)
def test_heuristics_table(message_type: str, text: str, previous: list[str] | None, expected: float) -> None:
    assert wait_seconds(message_type=message_type, text=text, base_wait=BASE, previous_texts=previous) == pytest.approx(expected)


def test_factors_stay_in_the_agreed_ranges() -> None:
    assert 0.3 <= SHORT_FACTOR <= 0.5
    assert 1.5 <= LONG_FACTOR <= 2.0


def test_wait_scales_with_the_base_and_never_goes_negative() -> None:
    assert wait_seconds(message_type="text", text="да", base_wait=2.0) == pytest.approx(2.0 * SHORT_FACTOR)
    assert wait_seconds(message_type="text", text="маникюр и", base_wait=2.0) == pytest.approx(2.0 * LONG_FACTOR)
    assert wait_seconds(message_type="text", text="маникюр", base_wait=0.0) == 0.0
    assert wait_seconds(message_type="text", text="маникюр", base_wait=-1.0) == 0.0


def test_word_lists_hold_what_the_docstring_promises() -> None:
    assert {"и", "а", "но", "что", "чтобы", "в", "на", "мен", "және", "бірақ"} <= end_of_turn.CONTINUATIONS
    assert {"привет", "здравствуйте", "сәлем"} <= end_of_turn.GREETINGS
    assert {"да", "нет", "ок", "спасибо", "иә", "жоқ", "рахмет"} <= end_of_turn.SHORT_ANSWERS
    # Words that often end a complete sentence must not be taken for a cut-off
    assert not {"как", "тоже", "да", "үшін"} & end_of_turn.CONTINUATIONS


def test_fast_enough_to_run_on_every_webhook() -> None:
    texts = [row[1] for row in TABLE] * 50
    started = time.perf_counter()
    for text in texts:
        wait_seconds(message_type="text", text=text, base_wait=BASE, previous_texts=["Здравствуйте"])
    per_call = (time.perf_counter() - started) / len(texts)
    assert per_call < 0.0005  # well under a millisecond (typically a few microseconds)
