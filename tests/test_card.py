"""The handover card as managers read it: rendered from plain values, no Telegram needed."""

import uuid
from dataclasses import replace

from app.models import HandoverAction, HandoverReason, HandoverStatus, MessageRole
from app.services.handover import card

HANDOVER_ID = uuid.UUID("0b6f3d2c-6a51-4c1e-9d53-8f1f2a7d4b10")
PENDING = card.CardView(
    handover_id=HANDOVER_ID,
    status=HandoverStatus.PENDING,
    reason=HandoverReason.HUMAN_REQUEST,
    reason_detail=None,
    outcome=None,
    assigned_to=None,
    customer_name="Айгуль <VIP>",
    phone="77010000001",
    recent=[(MessageRole.USER, "Позовите менеджера"), (MessageRole.ASSISTANT, "Передаю ваш вопрос менеджеру")],
)


def _callbacks(view: card.CardView) -> list[str]:
    markup = card.buttons(view)
    return [button["callback_data"] for row in (markup or {}).get("inline_keyboard", []) for button in row]


def test_a_pending_card_says_who_waits_and_why_with_the_latest_messages_in_order():
    assert card.text(PENDING).splitlines() == [
        "🆘 <b>Нужен менеджер</b>",
        "Клиент: Айгуль &lt;VIP&gt; · +77010000001",  # customer text cannot break the HTML message
        "Причина: клиент просит менеджера",
        "",
        "Последние сообщения:",
        "👤 Позовите менеджера",
        "🤖 Передаю ваш вопрос менеджеру",
    ]


def test_the_card_names_the_manager_once_taken_and_an_unknown_reason_as_it_is():
    taken = replace(PENDING, status=HandoverStatus.ACTIVE, assigned_to="Анна", reason="new_reason", recent=[])
    assert card.text(taken).splitlines() == [
        "🟢 <b>В работе</b> · Анна",
        "Клиент: Айгуль &lt;VIP&gt; · +77010000001",
        "Причина: new_reason",
    ]


def test_buttons_follow_the_status_and_a_press_reads_back_as_the_same_action():
    assert _callbacks(PENDING) == [f"{action}_{HANDOVER_ID}" for action in ("take", "skip", "resolve", "return")]
    assert _callbacks(replace(PENDING, status=HandoverStatus.ACTIVE)) == [f"resolve_{HANDOVER_ID}", f"return_{HANDOVER_ID}"]
    for closed in (HandoverStatus.RESOLVED, HandoverStatus.BOT_HANDLING, HandoverStatus.TIMEOUT):
        assert card.buttons(replace(PENDING, status=closed)) is None
    assert all(len(data.encode()) <= 64 for data in _callbacks(PENDING))  # Telegram's limit for callback_data
    assert card.parse_button(f"return_{HANDOVER_ID}") == (HandoverAction.RETURN, HANDOVER_ID)
    assert card.parse_button(f"created_{HANDOVER_ID}") == (None, HANDOVER_ID)  # not a button
    assert card.parse_button("take_not-an-id") == (HandoverAction.TAKE, None)
