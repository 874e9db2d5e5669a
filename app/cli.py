"""Operator commands: `python -m app.cli --help`."""

import argparse
import json
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from app.cli_demo import add_demo_commands
from app.cli_kb import add_kb_commands
from app.config import settings
from app.db import now as db_now
from app.db import session_scope
from app.intents import examples as intent_examples
from app.intents.neighbours import read_csv
from app.models import BookingStatus, Client, Conversation, User
from app.schemas.client import WEEKDAYS
from app.services import clients, hours
from app.services.booking import catalog
from app.services.booking.store import store as booking_store
from app.services.channels import telegram
from app.services.conversation import intent, sensitive
from app.services.handover import bots, report
from app.services.operations import digest
from app.utils import crypto
from app.utils.errors import ConfigError, TrufflesError

Command = Callable[[argparse.Namespace], int]


def _client_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "name": getattr(args, "name", None),
        "chatflow_token": args.chatflow_token,
        "chatflow_instance_id": args.chatflow_instance,
        "telegram_chat_id": args.telegram_chat_id,
        "telegram_bot_token": args.telegram_bot_token,
        "webhook_secret": args.webhook_secret,
    }
    if args.prompt_file:
        fields["prompt"] = Path(args.prompt_file).read_text(encoding="utf-8")
    if args.generate_secret:
        fields["webhook_secret"] = clients.new_webhook_secret()
    if args.insecure_no_secret:
        if args.webhook_secret or args.generate_secret:
            raise TrufflesError("--insecure-no-secret cannot be combined with a webhook secret")
        fields["webhook_insecure"] = True
    if args.set:
        fields["settings"] = dict(_parse_setting(item) for item in args.set)
    return fields


def _webhook_security(client: Client) -> str:
    if client.webhook_secret_hash:
        return "secret"
    return "INSECURE (no secret, accepted)" if client.webhook_insecure else "no secret: deliveries refused"


def _webhook_setup(slug: str, secret: str, public_url: str | None) -> dict[str, str]:
    """What to configure in ChatFlow, shown once (only the secret's digest is stored)."""
    base = (public_url or settings.public_base_url or "https://<your-host>").rstrip("/")
    print(f"the webhook secret is shown only now: give ChatFlow {base}/webhook/{slug} and the secret", file=sys.stderr)
    return {
        "webhook_url": f"{base}/webhook/{slug}",
        "webhook_secret": secret,  # sent as the X-Webhook-Secret header
        "webhook_url_with_secret": f"{base}/webhook/{slug}?secret={secret}",  # for a gateway that cannot set headers
    }


def _parse_setting(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise TrufflesError(f"--set expects key=value, got '{item}'")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def _describe(client: Client) -> dict[str, Any]:
    return {
        "slug": client.slug,
        "name": client.name,
        "active": client.is_active,
        "webhook": f"/webhook/{client.slug}",
        "webhook_security": _webhook_security(client),
        "chatflow": _token_state(client.chatflow_token),
        "telegram_chat_id": client.telegram_chat_id,
        "telegram_bot": _token_state(client.telegram_bot_token, client.telegram_bot_id),
        "prompt_chars": len(client.prompt or ""),
        "settings": clients.settings_of(client).model_dump(),
    }


def _token_state(value: str | None, bot_id: int | None = None) -> str:
    if value is None:
        return "default"
    own = f"own (bot {bot_id})" if bot_id else "own"
    return own if crypto.is_sealed(value) else f"{own}, PLAIN TEXT: run `secrets rotate`"


def cmd_client_create(args: argparse.Namespace) -> int:
    """Create a client. Secure by default: a webhook secret is generated unless one is given, or
    --insecure-no-secret is chosen explicitly."""
    fields = _client_fields(args)
    if fields.get("webhook_secret") is None and not fields.get("webhook_insecure"):
        fields["webhook_secret"] = clients.new_webhook_secret()
    with session_scope() as session:
        client = clients.create(session, slug=args.slug, **fields)
        out = _describe(client)
    if fields.get("webhook_secret") and not args.webhook_secret:
        out.update(_webhook_setup(args.slug, fields["webhook_secret"], args.public_url))
    elif fields.get("webhook_insecure"):
        print(f"WARNING: /webhook/{args.slug} accepts deliveries from anyone who knows the URL (--insecure-no-secret)", file=sys.stderr)
    print(json.dumps(out, ensure_ascii=False, indent=2))
    return 0


def cmd_client_update(args: argparse.Namespace) -> int:
    fields = _client_fields(args)
    if args.active is not None:
        fields["is_active"] = args.active
    with session_scope() as session:
        client = clients.update(session, slug=args.slug, **fields)
        out = _describe(client)
    if args.generate_secret:
        out.update(_webhook_setup(args.slug, fields["webhook_secret"], args.public_url))
    print(json.dumps(out, ensure_ascii=False, indent=2))
    return 0


def cmd_client_list(args: argparse.Namespace) -> int:
    with session_scope() as session:
        rows = [_describe(c) for c in clients.list_all(session)]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no clients yet: python -m app.cli client create --slug SLUG --name NAME")
    for row in rows:
        state = "active" if row["active"] else "inactive"
        print(
            f"{row['slug']:<20} {row['name']:<30} {state:<8} webhook={row['webhook_security']} "
            f"chatflow={row['chatflow']} telegram_chat={row['telegram_chat_id']}"
        )
    return 0


def cmd_client_show(args: argparse.Namespace) -> int:
    with session_scope() as session:
        print(json.dumps(_describe(clients.get_by_slug(session, args.slug)), ensure_ascii=False, indent=2))
    return 0


def cmd_policy_set(args: argparse.Namespace) -> int:
    """Load the business's rules for the bot: instructions for the model and topics for a person, never knowledge."""
    text_ = Path(args.file).read_text(encoding="utf-8")
    with session_scope() as session:
        clients.update(session, slug=args.slug, policy=text_)
    _print_policy(args.slug, text_)
    return 0


def cmd_policy_show(args: argparse.Namespace) -> int:
    with session_scope() as session:
        text_ = clients.get_by_slug(session, args.slug).policy
    if not text_.strip():
        print(f"client '{args.slug}' has no policy: python -m app.cli client policy set --slug {args.slug} FILE")
        return 0
    _print_policy(args.slug, text_)
    return 0


def cmd_policy_clear(args: argparse.Namespace) -> int:
    with session_scope() as session:
        client = clients.get_by_slug(session, args.slug)
        client.policy = ""
    clients.clear_cache()
    print(f"policy of '{args.slug}' removed")
    return 0


def _print_policy(slug: str, text_: str) -> None:
    """What the bot understood: the rules that call a person, the topics they switch on, their own keywords."""
    policy = sensitive.read_policy(text_)
    print(f"policy of '{slug}': {len(policy.lines)} lines for the model (never quoted to customers)")
    print(f"rules that call a person ({len(policy.rules)}):")
    for rule in policy.rules:
        print(f"  - {rule}")
    print(f"sensitive topics they switch on: {', '.join(sorted(policy.topics)) or '-'}")
    print(f"keywords of their own: {', '.join(policy.keywords) or '-'}")


def cmd_hours(args: argparse.Namespace) -> int:
    """Show or change a client's business hours, holidays and time zone."""
    with session_scope() as session:
        current = clients.settings_of(clients.get_by_slug(session, args.slug))
        week = {} if args.always_open else dict(current.hours)
        for item in args.day or []:
            days, intervals = _parse_day(item)
            for day in days:
                week[day] = intervals
        holidays = sorted({*current.holidays, *(args.holiday or [])} - set(args.no_holiday or []))
        changes: dict[str, Any] = {"hours": week, "holidays": [d.isoformat() for d in holidays]}
        if args.timezone:
            changes["timezone"] = args.timezone
        if args.day or args.always_open or args.holiday or args.no_holiday or args.timezone:
            current = clients.settings_of(clients.update(session, slug=args.slug, settings=changes))
    schedule = hours.schedule_of(current)
    print(f"{args.slug}: {hours.describe_week(schedule)} ({current.timezone})")
    print(f"holidays: {', '.join(d.isoformat() for d in current.holidays) or '-'}")
    return 0


def _parse_day(item: str) -> tuple[list[str], list[str]]:
    """'mon-fri=10:00-20:00', 'sat=11:00-15:00,16:00-19:00', 'sun=off' -> (days, intervals)."""
    days_, sep, raw = item.partition("=")
    if not sep:
        raise TrufflesError(f"--day expects DAYS=HOURS (e.g. mon-fri=10:00-20:00 or sun=off), got '{item}'")
    first, _, last = days_.strip().lower().partition("-")
    if first not in WEEKDAYS or (last and last not in WEEKDAYS):
        raise TrufflesError(f"unknown day in '{days_}': use {', '.join(WEEKDAYS)}")
    start, end = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
    days = [WEEKDAYS[i % 7] for i in range(start, end + 1 if end >= start else end + 8)]
    intervals = [] if raw.strip().lower() in ("off", "closed", "выходной") else [i.strip() for i in raw.split(",") if i.strip()]
    return days, intervals


_OUTCOME_LABELS = {
    "resolved": "resolved by a manager",
    "returned": "returned to the bot",
    "cancelled": "withdrawn by the customer",
    "untaken": "auto-closed: nobody took it",
    "silent": "auto-closed: silence after taking",
    "open": "still open",
}


def cmd_report_handovers(args: argparse.Namespace) -> int:
    """Handovers of the last days: by outcome, time to take, takes and skips per manager, auto-closes."""
    with session_scope() as session:
        client = clients.get_by_slug(session, args.client)
        since = db_now(session) - timedelta(days=args.days)
        result = report.handovers(session, client_id=client.id, since=since)
    if args.json:
        print(
            json.dumps(
                asdict(result) | {"since": result.since.isoformat(), "auto_closed": result.auto_closed}, ensure_ascii=False, indent=2
            )
        )
        return 0
    print(f"handovers of '{args.client}', last {args.days} days (since {result.since:%Y-%m-%d %H:%M} UTC): {result.total}")
    for key, label in _OUTCOME_LABELS.items():
        if result.by_outcome.get(key):
            print(f"  {label:<36} {result.by_outcome[key]}")
    print(f"auto-closed: {result.auto_closed}")
    if result.taken:
        print(f"time to take ({result.taken} taken): median {result.take_median_minutes:.0f} min, p90 {result.take_p90_minutes:.0f} min")
    else:
        print("time to take: none taken")
    print("reasons: " + (", ".join(f"{reason} {n}" for reason, n in sorted(result.by_reason.items(), key=lambda kv: -kv[1])) or "-"))
    print("per manager:           takes  skips  replies  resolved  returned")
    for row in result.managers:
        print(f"  {row.name[:20]:<20} {row.takes:>5}  {row.skips:>5}  {row.replies:>7}  {row.resolves:>8}  {row.returns:>8}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """The daily digest's figures over any period: from --since (a local day, default today) to the end of --until or now."""
    if not args.client:
        raise TrufflesError("report needs --client SLUG (or a report: report handovers --client SLUG)")
    with session_scope() as session:
        client = clients.get_by_slug(session, args.client)
        timezone = clients.settings_of(client).timezone
        now = db_now(session)
        start = digest.day_bounds(args.since or now.astimezone(ZoneInfo(timezone)).date(), timezone)[0]
        end = min(now, digest.day_bounds(args.until, timezone)[1]) if args.until else now
        if end <= start:
            raise TrufflesError("--since must be before --until and not in the future")
        found = digest.figures(session, client=client, start=start, end=end)
    if args.json:
        print(json.dumps(digest.as_json(found), ensure_ascii=False, indent=2))
    else:
        print(digest.render(found, title="Отчёт"))
    return 0


def cmd_services_load(args: argparse.Namespace) -> int:
    """Replace a client's services list (the truth for prices and durations) with a YAML file's."""
    entries = catalog.parse_yaml(Path(args.file).read_text(encoding="utf-8"))
    with session_scope() as session:
        client = clients.get_by_slug(session, args.client)
        count = booking_store(session).replace_services(client.id, entries)
    print(f"services of '{args.client}': {count} loaded")
    for entry in entries:
        print(f"  {entry.line}")
    return 0


def cmd_services_list(args: argparse.Namespace) -> int:
    with session_scope() as session:
        listed = booking_store(session).catalog(clients.get_by_slug(session, args.client).id)
    if args.json:
        rows = [
            {"name": e.name, "aliases": list(e.aliases), "duration": e.duration_minutes, "price": e.price, "price_max": e.price_max}
            for e in listed.entries
        ]
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not listed:
        print(f"client '{args.client}' has no services list: python -m app.cli services load --client {args.client} FILE.yaml")
    for entry in listed.entries:
        aliases = f"  (also: {', '.join(entry.aliases)})" if entry.aliases else ""
        print(f"{entry.line}{aliases}")
    return 0


def cmd_services_clear(args: argparse.Namespace) -> int:
    with session_scope() as session:
        booking_store(session).replace_services(clients.get_by_slug(session, args.client).id, [])
    print(f"services list of '{args.client}' removed")
    return 0


def cmd_bookings_list(args: argparse.Namespace) -> int:
    """A client's booking requests, the latest first: when, service, customer, status, who decided."""
    status = BookingStatus(args.status) if args.status else None
    with session_scope() as session:
        client = clients.get_by_slug(session, args.client)
        rows = []
        for b in booking_store(session).listed(client.id, status=status, limit=args.limit):
            phone = session.scalar(
                select(User.phone).join(Conversation, Conversation.user_id == User.id).where(Conversation.id == b.conversation_id)
            )
            at = b.requested_at.astimezone(ZoneInfo(b.timezone)) if b.requested_at else None
            rows.append(
                {
                    "when": at.strftime("%Y-%m-%d %H:%M") if at else None,
                    "service": b.service_name,
                    "name": b.customer_name,
                    "phone": phone,
                    "status": b.status.value,
                    "decided_by": b.decided_by,
                    "created": b.created_at.isoformat(),
                }
            )
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print(f"no bookings of '{args.client}'" + (f" with status {status}" if status else ""))
    for row in rows:
        decided = f"  ({row['decided_by']})" if row["decided_by"] else ""
        print(
            f"{row['when'] or '—':<17} {(row['service'] or '—')[:28]:<28} {(row['name'] or '—')[:20]:<20} +{row['phone']:<13} "
            f"{row['status']}{decided}"
        )
    return 0


def cmd_db_init(args: argparse.Namespace) -> int:
    """Create the database if it does not exist, then apply every migration."""
    url = make_url(settings.database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": url.database})
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{url.database}"'))
            print(f"created database {url.database}")
    admin.dispose()
    command.upgrade(Config(str(Path(__file__).resolve().parent.parent / "alembic.ini")), "head")
    print("schema is up to date")
    return 0


def _client_id(slug: str | None) -> uuid.UUID | None:
    if slug is None:
        return None
    with session_scope() as session:
        return clients.get_by_slug(session, slug).id


def cmd_intent(args: argparse.Namespace) -> int:
    """Classify a customer message the way a turn does: the rule, the model's probabilities, the client's
    examples, the decision; with --llm also what the language model says when the decision is unclear."""
    client_id = _client_id(args.client)
    decision = intent.decision_for(args.text, client_id=client_id)
    shown = decision.as_dict()
    if args.llm:
        final = intent.classify(args.text, client_id=client_id)
        shown["final"] = {"intent": final.intent, "confidence": round(final.confidence, 3), "source": final.source}
    if args.json:
        print(json.dumps(shown, ensure_ascii=False, indent=2))
        return 0
    escalate = " (escalate)" if decision.escalate else ""
    print(f"{decision.intent}{escalate}{'  UNCLEAR' if decision.unclear else ''}  decided by {decision.decided_by}: {decision.reason}")
    print(f"rule: {decision.rule.intent} {decision.rule.confidence:.2f}")
    print("model: " + ", ".join(f"{name} {p:.3f}" for name, p in shown["probabilities"].items()))
    for near in decision.neighbours:
        print(f"client example {near.similarity:.3f}: {near.label}  {near.text}")
    if "final" in shown:
        print(f"final: {shown['final']['intent']} ({shown['final']['source']}, {shown['final']['confidence']:.2f})")
    return 0


def cmd_intent_examples_load(args: argparse.Namespace) -> int:
    """Replace a client's intent examples with a text,label CSV's (embedded once here; no retraining)."""
    try:
        rows = read_csv(Path(args.file).read_text(encoding="utf-8-sig"))
        with session_scope() as session:
            count = intent_examples.replace(session, clients.get_by_slug(session, args.client).id, rows)
    except ValueError as exc:  # a bad line, a text labelled twice, a file that is not UTF-8: nothing was changed
        raise TrufflesError(f"{args.file}: {exc}") from exc
    print(f"intent examples of '{args.client}': {count} loaded (workers use them within {intent_examples.EXAMPLES_CACHE_SECONDS} s)")
    return 0


def cmd_intent_examples_list(args: argparse.Namespace) -> int:
    with session_scope() as session:
        rows = intent_examples.listed(session, clients.get_by_slug(session, args.client).id)
    if args.json:
        print(json.dumps([{"text": text_, "label": label} for text_, label in rows], ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print(f"client '{args.client}' has no intent examples: python -m app.cli intent-examples load --client {args.client} FILE.csv")
    for text_, label in rows:
        print(f"{label:<14} {text_}")
    return 0


def cmd_intent_examples_clear(args: argparse.Namespace) -> int:
    with session_scope() as session:
        intent_examples.replace(session, clients.get_by_slug(session, args.client).id, [])
    print(f"intent examples of '{args.client}' removed")
    return 0


def cmd_telegram_check(args: argparse.Namespace) -> int:
    """Can the client's bot create topics and pin cards in its chat?"""
    with session_scope() as session:
        client = clients.get_by_slug(session, args.client)
        bot, chat_id = telegram.bot_for(client), telegram.chat_for(client)
    try:
        rows = telegram.check_chat(bot, chat_id=chat_id)
    except telegram.TelegramError as exc:
        print(f"FAIL  Telegram refused: {exc.message}")
        return 1
    for check, ok, detail in rows:
        note = f"  ({detail})" if detail and (not ok or check == "bot token valid") else ""
        print(f"{'ok  ' if ok else 'FAIL'}  {check}{note}")
    return 0 if all(ok for _, ok, _ in rows) else 1


def cmd_telegram_set_webhook(args: argparse.Namespace) -> int:
    """Point the client's bot at /telegram-webhook/<bot id>, with a new secret of its own that Telegram sends back."""
    with session_scope() as session:
        bot = telegram.bot_for(clients.get_by_slug(session, args.client))
    base = args.url.rstrip("/").removesuffix("/telegram-webhook")
    url = f"{base}/telegram-webhook/{bot.id}"
    secret = bots.new_webhook_secret()
    # Telegram first: if it refuses, the secret in use stays the stored one.
    telegram.set_webhook(bot, url=url, secret=secret)
    with session_scope() as session:
        bots.store_webhook_secret(session, bot_id=bot.id, secret=secret)
    print(f"webhook set: {url} (a secret of this bot's own, stored as a digest)")
    return 0


def cmd_secrets_generate_key(args: argparse.Namespace) -> int:
    """Print a new key for SECRETS_KEY."""
    print(crypto.generate_key())
    return 0


def cmd_secrets_rotate(args: argparse.Namespace) -> int:
    """Re-encrypt every stored token with the first key of SECRETS_KEY (plain-text ones encrypted for the first time)."""
    with session_scope() as session:
        count = clients.reseal_tokens(session)
    print(f"re-encrypted {count} token(s) with the first key of SECRETS_KEY; older keys may now be removed")
    return 0


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt-file", help="file with the system prompt for this client")
    parser.add_argument("--chatflow-token")
    parser.add_argument("--chatflow-instance")
    parser.add_argument("--telegram-chat-id", type=int)
    parser.add_argument("--telegram-bot-token")
    parser.add_argument("--webhook-secret", help="shared secret ChatFlow sends as X-Webhook-Secret (at least 24 characters)")
    parser.add_argument("--generate-secret", action="store_true", help="generate a new webhook secret and print it once")
    parser.add_argument(
        "--insecure-no-secret", action="store_true", help="accept deliveries without a secret (anyone who knows the URL can post)"
    )
    parser.add_argument("--public-url", help="the service's public base URL, to print the webhook URL (default: PUBLIC_BASE_URL)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="a per-client setting, e.g. --set mute_minutes_first=30")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.cli", description="Truffles operator commands")
    sub = parser.add_subparsers(dest="command", required=True)

    client = sub.add_parser("client", help="create, update and list clients").add_subparsers(dest="action", required=True)
    create = client.add_parser("create", help="create a client")
    create.add_argument("--slug", required=True)
    create.add_argument("--name", required=True)
    _add_client_options(create)
    create.set_defaults(func=cmd_client_create)
    upd = client.add_parser("update", help="change a client's fields or settings")
    upd.add_argument("--slug", required=True)
    upd.add_argument("--name")
    upd.add_argument("--active", action=argparse.BooleanOptionalAction, default=None)
    _add_client_options(upd)
    upd.set_defaults(func=cmd_client_update)
    lst = client.add_parser("list", help="list clients")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_client_list)
    show = client.add_parser("show", help="show one client")
    show.add_argument("--slug", required=True)
    show.set_defaults(func=cmd_client_show)
    policy = client.add_parser("policy", help="the business's rules for the bot (not knowledge)").add_subparsers(
        dest="policy_action", required=True
    )
    policy_set = policy.add_parser("set", help="load the rules from a file (Markdown or text)")
    policy_set.add_argument("--slug", required=True)
    policy_set.add_argument("file")
    policy_set.set_defaults(func=cmd_policy_set)
    for name, func, help_ in (("show", cmd_policy_show, "what the bot understood"), ("clear", cmd_policy_clear, "remove the rules")):
        sub_ = policy.add_parser(name, help=help_)
        sub_.add_argument("--slug", required=True)
        sub_.set_defaults(func=func)
    hrs = client.add_parser("hours", help="show or set business hours, holidays and time zone")
    hrs.add_argument("--slug", required=True)
    hrs.add_argument("--day", action="append", metavar="DAYS=HOURS", help="e.g. mon-fri=10:00-20:00, sat=11:00-17:00, sun=off")
    hrs.add_argument("--holiday", action="append", type=date.fromisoformat, metavar="YYYY-MM-DD")
    hrs.add_argument("--no-holiday", action="append", type=date.fromisoformat, metavar="YYYY-MM-DD")
    hrs.add_argument("--timezone", help="IANA name, default Asia/Almaty")
    hrs.add_argument("--always-open", action="store_true", help="forget the weekly schedule: open around the clock")
    hrs.set_defaults(func=cmd_hours)

    db = sub.add_parser("db", help="database set-up").add_subparsers(dest="action", required=True)
    db.add_parser("init", help="create the database if missing and apply migrations").set_defaults(func=cmd_db_init)

    classify = sub.add_parser("intent", help="classify a customer message: the rule, the model's probabilities, the decision")
    classify.add_argument("text")
    classify.add_argument("--client", help="with this client's own examples (intent-examples)")
    classify.add_argument("--json", action="store_true")
    classify.add_argument("--llm", action="store_true", help="also ask the language model when the decision is unclear")
    classify.set_defaults(func=cmd_intent)
    _client_set(
        sub.add_parser("intent-examples", help="a client's own labelled messages for the intent classifier"),
        load=(cmd_intent_examples_load, "replace the client's examples with a CSV's (text,label; a header line is optional)"),
        show=(cmd_intent_examples_list, "show the client's examples"),
        clear=(cmd_intent_examples_clear, "remove the client's examples"),
    )

    tg = sub.add_parser("telegram", help="check and connect a client's Telegram bot").add_subparsers(dest="action", required=True)
    check = tg.add_parser("check", help="bot rights in the client's chat (topics, pins)")
    check.add_argument("--client", required=True)
    check.set_defaults(func=cmd_telegram_check)
    hook = tg.add_parser("set-webhook", help="set the bot's webhook to this service, with the secret token")
    hook.add_argument("--client", required=True)
    hook.add_argument("--url", required=True, help="the service's public base URL")
    hook.set_defaults(func=cmd_telegram_set_webhook)

    sec = sub.add_parser("secrets", help="the key that encrypts stored tokens").add_subparsers(dest="action", required=True)
    sec.add_parser("generate-key", help="print a new SECRETS_KEY").set_defaults(func=cmd_secrets_generate_key)
    sec.add_parser("rotate", help="re-encrypt stored tokens with the first key of SECRETS_KEY").set_defaults(func=cmd_secrets_rotate)

    add_demo_commands(sub)
    rep_parser = sub.add_parser("report", help="how the bot did over a period (the daily digest's figures); report handovers")
    rep_parser.add_argument("--client")
    rep_parser.add_argument("--since", type=date.fromisoformat, metavar="YYYY-MM-DD", help="from this local day (default: today)")
    rep_parser.add_argument("--until", type=date.fromisoformat, metavar="YYYY-MM-DD", help="to the end of this local day (default: now)")
    rep_parser.add_argument("--json", action="store_true")
    rep_parser.set_defaults(func=cmd_report)
    rep = rep_parser.add_subparsers(dest="report")
    rep_handovers = rep.add_parser("handovers", help="handovers by outcome, time to take, takes and skips per manager")
    rep_handovers.add_argument("--client", required=True)
    rep_handovers.add_argument("--days", type=int, default=7)
    rep_handovers.add_argument("--json", action="store_true")
    rep_handovers.set_defaults(func=cmd_report_handovers)
    _client_set(
        sub.add_parser("services", help="a client's services list: names, prices, durations"),
        load=(cmd_services_load, "replace the list with a YAML file's (name, aliases, duration, price)"),
        show=(cmd_services_list, "show the list"),
        clear=(cmd_services_clear, "remove the list"),
    )
    bookings = sub.add_parser("bookings", help="booking requests").add_subparsers(dest="action", required=True)
    bookings_list = bookings.add_parser("list", help="a client's booking requests, the latest first")
    bookings_list.add_argument("--client", required=True)
    bookings_list.add_argument("--status", choices=[s.value for s in BookingStatus])
    bookings_list.add_argument("--limit", type=int, default=50)
    bookings_list.add_argument("--json", action="store_true")
    bookings_list.set_defaults(func=cmd_bookings_list)
    add_kb_commands(sub)
    return parser


def _client_set(
    parser: argparse.ArgumentParser, *, load: tuple[Command, str], show: tuple[Command, str], clear: tuple[Command, str]
) -> None:
    """A client's set kept from a file: `load --client S FILE` (replaces it), `list --client S [--json]`, `clear --client S`."""
    actions = parser.add_subparsers(dest="action", required=True)
    for name, (func, help_) in (("load", load), ("list", show), ("clear", clear)):
        action = actions.add_parser(name, help=help_)
        action.add_argument("--client", required=True)
        if name == "load":
            action.add_argument("file")
        if name == "list":
            action.add_argument("--json", action="store_true")
        action.set_defaults(func=func)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (TrufflesError, ConfigError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
