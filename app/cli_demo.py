"""`python -m app.cli demo` and `simulate`: the demo salon, and a customer and a manager talking to the running service.

`demo` creates (or refreshes) the demo client with its knowledge base (app/demo_salon.yaml, loaded with
`kb ingest`); with `--local-telegram` (scripts/start.sh, when the local fakes run) it also gets a managers'
group in the fake Telegram and a bot webhook secret, saved with the group's id in data/demo-telegram.json
(owner-only) for `simulate --as-manager`.

`simulate` posts a customer's WhatsApp message to the running service and prints what the customer gets back,
then what the managers' group shows (the card, forwarded messages, reminders, delivery notices): read as
plain text from the local fake Telegram, never from a real one. `simulate --as-manager` writes in the
customer's topic as a manager would (or presses a card's button with `--press`).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from sqlalchemy import select

from app import cli_kb
from app.config import settings
from app.db import now as db_now
from app.db import session_scope
from app.models import Client, Conversation, Handover, HandoverStatus, Message, MessageRole, MessageStatus, User
from app.services import clients
from app.services.channels import telegram
from app.services.handover import bots

DEMO_SLUG = "demo"
DEMO_PROMPT = (
    "Ты — ассистент салона красоты «Лотос» в Алматы. Отвечаешь клиентам в WhatsApp вежливо и коротко, "
    "помогаешь узнать цены, время работы и записаться."
)
DEMO_KNOWLEDGE = Path(__file__).resolve().parent / "demo_salon.yaml"
# The fake Telegram accepts any token and any group: these name the demo's, nothing real.
DEMO_CHAT_ID = -1000000000001
DEMO_BOT_TOKEN = "7000000001:demo-local-fake-token"
DEMO_MANAGER = {"id": 100000001, "is_bot": False, "first_name": "Айгерим", "last_name": "(менеджер, демо)", "language_code": "ru"}
_INSPECT = "/_fake/messages"  # the fake Telegram's view of a group (fakes/telegram.py)
_SETTLE_SECONDS = 1.5  # the managers' group is read once nothing new arrived for this long
_MANAGER_WAIT_SECONDS = 8.0
_SEEN_FILE = "simulate-seen.json"  # what simulate last printed of each customer's topic


def _data_file(name: str) -> Path:
    return Path("data") / name


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text, encoding="utf-8")


def _saved_secret(slug: str) -> str | None:
    """The demo's webhook secret, saved by `demo` for `simulate` on this machine."""
    path = _data_file(f"{slug}-webhook-secret")
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def _local_telegram() -> dict[str, Any]:
    """What `demo --local-telegram` saved: the fake Telegram's URL, the group, the bot and its webhook secret."""
    path = _data_file("demo-telegram.json")
    if not path.is_file():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


# --- demo ---------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """Create (or refresh) the demo client, with a new webhook secret each time (saved in data/demo-webhook-secret,
    owner-only, for `simulate`) and the salon's knowledge base."""
    secret = clients.new_webhook_secret()
    fields: dict[str, Any] = {"name": "Салон «Лотос» (demo)", "prompt": DEMO_PROMPT, "webhook_secret": secret}
    if args.chatflow_token:
        fields.update(chatflow_token=args.chatflow_token, chatflow_instance_id=args.chatflow_instance)
    if args.local_telegram:
        fields.update(telegram_chat_id=DEMO_CHAT_ID, telegram_bot_token=DEMO_BOT_TOKEN)
    with session_scope() as session:
        exists = session.scalar(select(Client.id).where(Client.slug == DEMO_SLUG)) is not None
        if exists:
            clients.update(session, slug=DEMO_SLUG, **fields)
        else:
            clients.create(session, slug=DEMO_SLUG, **fields)
    path = _data_file(f"{DEMO_SLUG}-webhook-secret")
    _write_private(path, secret + "\n")
    print(f"demo client ready: POST /webhook/{DEMO_SLUG} (its webhook secret is in {path}; simulate reads it from there)")
    if args.local_telegram:
        _connect_local_telegram(args.public_url)
    print(f"knowledge base: {DEMO_KNOWLEDGE.name}")
    ingest = argparse.Namespace(client=DEMO_SLUG, url=os.environ.get("TRUFFLES_URL", args.public_url), json=False, paths=[DEMO_KNOWLEDGE])
    if cli_kb._guarded(cli_kb.cmd_ingest)(ingest) != 0:  # the service still starts: it answers honestly without knowledge
        print(f"the demo has no knowledge base yet: python -m app.cli kb ingest --client {DEMO_SLUG} {DEMO_KNOWLEDGE}", file=sys.stderr)
    return 0


def _connect_local_telegram(public_url: str) -> None:
    """Point the demo bot's webhook at this service in the local fake Telegram, and save what `simulate
    --as-manager` needs to write as a manager (the fake never calls the webhook itself)."""
    bot = telegram.Bot(DEMO_BOT_TOKEN)
    webhook_secret = bots.new_webhook_secret()
    deadline = time.monotonic() + 10
    while True:
        try:
            telegram.set_webhook(bot, url=f"{public_url.rstrip('/')}/telegram-webhook/{bot.id}", secret=webhook_secret)
            break
        except telegram.TelegramError:
            if time.monotonic() > deadline:  # the fakes are starting next to us
                raise
            time.sleep(0.5)
    with session_scope() as session:
        bots.store_webhook_secret(session, bot_id=bot.id, secret=webhook_secret)
    saved = {"api_url": settings.telegram_api_url, "chat_id": DEMO_CHAT_ID, "bot_id": bot.id, "webhook_secret": webhook_secret}
    _write_private(_data_file("demo-telegram.json"), json.dumps(saved, indent=2) + "\n")
    print(f"managers' group: the local fake Telegram at {settings.telegram_api_url} (simulate prints what it shows)")


# --- simulate: the customer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What became of a customer's message: the bot's reply, or why there is none (yet)."""

    reply: str | None
    status: str  # the reply's delivery status, or what happened instead
    seconds: float


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.as_manager:
        return _as_manager(args)
    if not args.text:
        print("error: the customer's message is missing", file=sys.stderr)
        return 2
    phone = "".join(ch for ch in args.phone if ch.isdigit())
    message_id = f"SIM{uuid.uuid4().hex[:16].upper()}"
    payload = {
        "messageType": "text",
        "message": args.text,
        "metadata": {"sender": args.name, "timestamp": int(time.time()), "messageId": message_id, "remoteJid": f"{phone}@s.whatsapp.net"},
        "mediaData": None,
    }
    secret = args.secret or os.environ.get("WEBHOOK_SECRET") or _saved_secret(args.client)
    headers = {"X-Webhook-Secret": secret} if secret else {}
    group = _Group(args)
    seen = group.snapshot(args.client, phone)
    started = time.monotonic()
    try:
        response = requests.post(f"{args.url.rstrip('/')}/webhook/{args.client}", json=payload, headers=headers, timeout=10)
    except requests.RequestException as exc:
        print(f"service not reachable at {args.url}: {type(exc).__name__}", file=sys.stderr)
        return 2
    print(f"webhook: HTTP {response.status_code} {response.text} ({(time.monotonic() - started) * 1000:.0f} ms)")
    if response.status_code == 401:
        print("the client's webhook secret is needed: --secret S (or WEBHOOK_SECRET)", file=sys.stderr)
    if response.status_code != 200:
        return 1
    outcome = wait_for_outcome(args.client, phone, message_id, timeout=args.timeout, started=started)
    if outcome.reply is not None:
        print(f"reply ({outcome.status}, {outcome.seconds:.1f} s):\n{outcome.reply}")
    else:
        print(f"no reply from the bot ({outcome.seconds:.1f} s): {outcome.status}")
    group.show(args.client, phone, seen)
    return 0 if outcome.reply is not None or outcome.status != _NOT_YET else 1


_NOT_YET = "not handled yet"
_DELIVERY = {
    MessageStatus.SENT: "delivered to WhatsApp",
    MessageStatus.PENDING: "not delivered yet: the gateway is retried",
    MessageStatus.FAILED: "NOT delivered: the gateway refused it",
}


def wait_for_outcome(slug: str, phone: str, message_id: str, *, timeout: float, started: float) -> Outcome:
    """Wait (at most `timeout` seconds from `started`) until the message's turn is decided; say what became of it."""
    deadline = started + timeout
    while True:
        with session_scope() as session:
            asked = session.scalar(
                select(Message).join(Client, Client.id == Message.client_id).where(Client.slug == slug, Message.external_id == message_id)
            )
            if asked is not None and asked.turn_id is not None and asked.status in (MessageStatus.PROCESSED, MessageStatus.IGNORED):
                reply = session.scalar(
                    select(Message)
                    .where(
                        Message.conversation_id == asked.conversation_id,
                        Message.role == MessageRole.ASSISTANT,
                        Message.turn_id == asked.turn_id,
                    )
                    .order_by(Message.created_at)
                    .limit(1)
                )
                elapsed = time.monotonic() - started
                if reply is None:
                    return Outcome(None, _why_silent(session, asked), elapsed)
                # the answer is decided; say it was delivered only once the gateway accepted it
                if reply.status != MessageStatus.PENDING or time.monotonic() >= deadline:
                    return Outcome(reply.content, _DELIVERY.get(reply.status, str(reply.status)), elapsed)
        if time.monotonic() >= deadline:
            return Outcome(None, f"{_NOT_YET} after {timeout:.0f} s (is the worker running?)", time.monotonic() - started)
        time.sleep(0.3)


def _why_silent(session: Any, asked: Message) -> str:
    conversation = session.get(Conversation, asked.conversation_id)
    handover = session.scalar(select(Handover).where(Handover.open_in(asked.conversation_id)))
    if handover is not None:
        who = f" ({handover.assigned_to})" if handover.status == HandoverStatus.ACTIVE and handover.assigned_to else ""
        return f"the conversation is with a manager{who}: the message went to the managers' topic"
    if conversation is not None and conversation.bot_muted_until and conversation.bot_muted_until > db_now(session):
        return f"the bot is muted for this customer until {conversation.bot_muted_until:%H:%M} UTC"
    return "the message was stored without an answer (it joined another turn, or needed none)"


# --- the managers' group, as the local fake Telegram shows it ------------------------------------------------


class _Group:
    """The customer's topic in the managers' group, read from the local fake Telegram (never a real one)."""

    def __init__(self, args: argparse.Namespace) -> None:
        saved = _local_telegram() if args.client == DEMO_SLUG else {}
        url = args.telegram_url or os.environ.get("TELEGRAM_API_URL") or saved.get("api_url") or settings.telegram_api_url
        self.url = str(url).rstrip("/")
        self.local = (urlsplit(self.url).hostname or "") in ("127.0.0.1", "localhost", "::1")

    def _topic(self, slug: str, phone: str) -> tuple[int, int] | None:
        with session_scope() as session:
            row = session.execute(
                select(Client.telegram_chat_id, Conversation.telegram_topic_id)
                .join(Conversation, Conversation.client_id == Client.id)
                .join(User, User.id == Conversation.user_id)
                .where(Client.slug == slug, User.phone == phone)
            ).first()
        return (int(row[0]), int(row[1])) if row is not None and row[0] is not None and row[1] is not None else None

    def messages(self, chat_id: int, thread_id: int) -> list[dict[str, Any]] | None:
        if not self.local:
            return None
        try:
            response = requests.get(f"{self.url}{_INSPECT}", params={"chat_id": chat_id, "thread_id": thread_id}, timeout=5)
            rows: list[dict[str, Any]] = response.json()["result"]
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return None
        return rows

    def snapshot(self, slug: str, phone: str) -> dict[int, int]:
        """Message id -> edits of what the topic showed when simulate last printed it (so a reminder that came in
        between two runs is shown by the next), or of what it shows now on the first run for this customer."""
        saved = self._saved().get(f"{slug}:{phone}")
        if saved is not None:
            return {int(message_id): edits for message_id, edits in saved.items()}
        topic = self._topic(slug, phone)
        rows = self.messages(*topic) if topic else None
        return {row["message_id"]: row["edits"] for row in rows or []}

    @staticmethod
    def _saved() -> dict[str, dict[str, int]]:
        path = _data_file(_SEEN_FILE)
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _remember(self, slug: str, phone: str, rows: list[dict[str, Any]]) -> None:
        saved = self._saved()
        saved[f"{slug}:{phone}"] = {str(row["message_id"]): row["edits"] for row in rows}
        _write_private(_data_file(_SEEN_FILE), json.dumps(saved) + "\n")

    def show(self, slug: str, phone: str, seen: dict[int, int], *, wait: float = _MANAGER_WAIT_SECONDS) -> None:
        """Print what is new or changed in the customer's topic since `seen`, once it settles (cards and notices
        are sent by the worker a moment after the turn)."""
        if not self.local:
            print(f"managers' group: not shown (only the local fake Telegram can be read; TELEGRAM_API_URL is {self.url})")
            return
        deadline, last_change = time.monotonic() + wait, time.monotonic()
        fresh: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            topic = self._topic(slug, phone)
            rows = (self.messages(*topic) if topic else None) or []
            changed = [row for row in rows if seen.get(row["message_id"]) != row["edits"]]
            if len(changed) != len(fresh) or any(a != b for a, b in zip(changed, fresh, strict=False)):
                fresh, last_change = changed, time.monotonic()
            elif time.monotonic() - last_change >= _SETTLE_SECONDS:
                break
            time.sleep(0.3)
        self._remember(slug, phone, rows)
        if not fresh:
            print("managers' group: nothing new")
            return
        print(f"managers' group, topic «{fresh[0]['topic'] or '-'}»:")
        for row in fresh:
            mark = "card" if row["buttons"] or row["pinned"] or row["edits"] else row["kind"]
            state = "edited" if row["message_id"] in seen else "new"
            print(f"  [{mark}, {state}]")
            for line in (row["text"] or "").splitlines():
                print(f"    {line}")
            if row["buttons"]:
                print(f"    buttons: {' | '.join(row['buttons'])}")


# --- simulate: the manager -----------------------------------------------------------------------------------

_PRESS = ("take", "skip", "resolve", "return")


def _as_manager(args: argparse.Namespace) -> int:
    """Write in the customer's topic (or press a button of its card) as a manager of the demo group would."""
    if bool(args.text) == bool(args.press):
        print("error: --as-manager needs either the manager's text or --press ACTION", file=sys.stderr)
        return 2
    phone = "".join(ch for ch in args.phone if ch.isdigit())
    saved = _local_telegram()
    bot_id = args.bot_id or saved.get("bot_id")
    secret = args.telegram_secret or saved.get("webhook_secret")
    if not bot_id or not secret:
        print("error: the bot's id and webhook secret are needed: run scripts/start.sh (or `demo --local-telegram`) first", file=sys.stderr)
        return 2
    with session_scope() as session:
        row = session.execute(
            select(Client.telegram_chat_id, Conversation.telegram_topic_id, Handover.id, Handover.telegram_message_id)
            .join(Conversation, Conversation.client_id == Client.id)
            .join(User, User.id == Conversation.user_id)
            .outerjoin(Handover, Handover.open_in(Conversation.id))
            .where(Client.slug == args.client, User.phone == phone)
        ).first()
    if row is None or row[0] is None or row[1] is None:
        print(f"error: customer +{phone} of '{args.client}' has no topic in the managers' group yet (no handover so far)", file=sys.stderr)
        return 2
    chat_id, thread_id, handover_id, card_id = row
    update_id = secrets.randbelow(2**31)
    chat = {"id": chat_id, "title": "Truffles managers", "type": "supergroup", "is_forum": True}
    if args.press:
        if handover_id is None or card_id is None:
            print(f"error: customer +{phone} has no open handover card to press", file=sys.stderr)
            return 2
        card = {"message_id": card_id, "chat": chat, "date": int(time.time()), "message_thread_id": thread_id, "is_topic_message": True}
        update: dict[str, Any] = {
            "update_id": update_id,
            "callback_query": {
                "id": str(secrets.randbits(63)),
                "from": DEMO_MANAGER,
                "message": card,
                "chat_instance": "1",
                "data": f"{args.press}_{handover_id}",
            },
        }
    else:
        message = {
            "message_id": 500000 + update_id % 100000,
            "from": DEMO_MANAGER,
            "chat": chat,
            "date": int(time.time()),
            "message_thread_id": thread_id,
            "is_topic_message": True,
            "text": args.text,
        }
        update = {"update_id": update_id, "message": message}
    group = _Group(args)
    seen = group.snapshot(args.client, phone)
    try:
        response = requests.post(
            f"{args.url.rstrip('/')}/telegram-webhook/{bot_id}",
            json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": secret},
            timeout=10,
        )
    except requests.RequestException as exc:
        print(f"service not reachable at {args.url}: {type(exc).__name__}", file=sys.stderr)
        return 2
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    answered = f" — {body['text']}" if isinstance(body, dict) and body.get("text") else ""
    action = f"pressed «{args.press}»" if args.press else f"wrote in the topic «{args.text}»"
    print(f"manager {DEMO_MANAGER['first_name']} {action}: HTTP {response.status_code}{answered}")
    group.show(args.client, phone, seen)
    return 0 if response.status_code == 200 else 1


def add_demo_commands(sub: Any) -> None:
    """Register `demo` and `simulate` on the CLI's subparsers."""
    demo = sub.add_parser("demo", help="create the demo client with its knowledge base")
    demo.add_argument("--chatflow-token")
    demo.add_argument("--chatflow-instance", default="demo")
    demo.add_argument("--public-url", default="http://127.0.0.1:8000")
    demo.add_argument("--local-telegram", action="store_true", help="a managers' group in the local fake Telegram (scripts/start.sh)")
    demo.set_defaults(func=cmd_demo)

    sim = sub.add_parser("simulate", help="a customer's message to the running service: the reply and what the managers saw")
    sim.add_argument("--client", default=DEMO_SLUG)
    sim.add_argument("--phone", required=True)
    sim.add_argument("--name", default="Test customer")
    sim.add_argument("--url", default="http://127.0.0.1:8000")
    sim.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the bot's turn (it returns as soon as it is decided)")
    sim.add_argument("--secret", help="the client's webhook secret (default: WEBHOOK_SECRET, or the demo's saved one)")
    sim.add_argument("--telegram-url", help="the local fake Telegram to read the managers' group from (default: the demo's)")
    sim.add_argument("--as-manager", action="store_true", help="write in the customer's topic as a manager instead")
    sim.add_argument("--press", choices=_PRESS, help="with --as-manager: press this button of the customer's handover card")
    sim.add_argument("--bot-id", type=int, help="with --as-manager: the bot's id (default: the demo's)")
    sim.add_argument("--telegram-secret", help="with --as-manager: the bot's webhook secret (default: the demo's)")
    sim.add_argument("text", nargs="?", help="the message")
    sim.set_defaults(func=cmd_simulate)
