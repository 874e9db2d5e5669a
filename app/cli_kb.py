"""`python -m app.cli kb ...`: ingest, list, delete and search a client's knowledge base; the questions it had
nothing for (`gaps`) and managers' answers to them (`suggestions`, `accept`, `reject`: accepting one ingests it).

The embedded Qdrant store belongs to the one process that opened its folder (the running service), so
these commands go through the service's admin API at --url (env TRUFFLES_URL, default
http://127.0.0.1:8000) with ADMIN_TOKEN. Only when nothing answers at --url do they run in this
process instead: always fine with a Qdrant server, and fine with the embedded store when no service holds
its folder (otherwise the command says the folder is in use). Exit codes: 0 done (a search that finds
nothing included), 2 an error (unreachable, refused, unknown client, a file that could not be ingested).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from sqlalchemy.orm import Session

from app.config import settings
from app.db import now as db_now
from app.db import session_scope
from app.models import Suggestion, SuggestionStatus
from app.services import clients
from app.services.knowledge import gaps, kb, qdrant, suggestions
from app.utils.errors import ExternalServiceError

_DEFAULT_URL = "http://127.0.0.1:8000"
_TIMEOUT = (3.05, 60)
_INGEST_TIMEOUT = (3.05, 900)  # embedding a long document takes a while on two cores
_EXCERPT = 160


class _Unreachable(Exception):
    """Nothing answers at --url."""


class _Failed(Exception):
    """The service (or this process) refused: the message says why."""


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    """One admin API call; the decoded JSON answer, _Unreachable, or _Failed with the service's reason."""
    headers = {"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"} if settings.admin_token else {}
    url = f"{args.url.rstrip('/')}/admin/clients/{quote(args.client, safe='')}/kb{path}"
    kwargs.setdefault("timeout", _TIMEOUT)
    try:
        response = requests.request(method, url, headers=headers, **kwargs)
    except requests.ConnectionError as exc:
        raise _Unreachable(str(args.url)) from exc
    except requests.RequestException as exc:
        raise _Failed(f"the service at {args.url} did not answer: {type(exc).__name__}") from exc
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code >= 400:
        detail = body.get("detail") if isinstance(body, dict) else None
        raise _Failed(f"{detail or response.reason} (HTTP {response.status_code})")
    return body


def _local_client_id(slug: str) -> str:
    with session_scope() as session:
        return str(clients.get_by_slug(session, slug).id)


def _run(args: argparse.Namespace, remote: Callable[[], Any], local: Callable[[str], Any]) -> Any:
    """The service's answer, or, when it is not running, the same work done in this process."""
    try:
        return remote()
    except _Unreachable:
        pass
    mode = "embedded" if qdrant.is_local() else "server"
    client_id = _local_client_id(args.client)
    try:
        return local(client_id)
    except ExternalServiceError as exc:
        hint = f" (is another process using {settings.qdrant_path}?)" if mode == "embedded" else ""
        raise _Failed(f"the service is not reachable at {args.url} and the knowledge base could not be opened here: {exc}{hint}") from exc
    finally:
        qdrant.close()  # release the embedded folder now, not in an interpreter-exit finalizer


def _print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2, default=str))


# --- commands ----------------------------------------------------------------------------------------


def cmd_ingest(args: argparse.Namespace) -> int:
    documents: list[dict[str, Any]] = []
    failed: dict[str, str] = {}
    files = kb.expand_paths(args.paths)
    for path, _ in files:
        if not path.is_file():
            failed[str(path)] = "no such file"
    wanted = [(path, source) for path, source in files if path.is_file()]

    def remote() -> None:
        for path, source in wanted:
            if kb.kind_of(source) is None:
                failed[str(path)] = f"unsupported file type; supported: {', '.join(kb.supported_suffixes())}"
                continue
            try:
                answer = _call(args, "POST", "/documents", files={"file": (source, path.read_bytes())}, timeout=_INGEST_TIMEOUT)
            except _Failed as exc:
                failed[str(path)] = str(exc)
                continue
            documents.extend(answer["documents"])

    def local(client_id: str) -> None:
        report = kb.ingest_paths(client_id=client_id, paths=[path for path, _ in wanted])
        documents.extend(
            {"source": result.source, "chunks": result.chunks, "status": result.status, "removed": result.removed}
            for result in report.sources
        )
        failed.update(report.failed)

    try:
        _run(args, remote, local)
    except _Failed:
        if documents:  # an upload failed part-way: say what did get in
            _report_ingest(args, documents, failed)
        raise
    _report_ingest(args, documents, failed)
    return 2 if failed else 0


def _report_ingest(args: argparse.Namespace, documents: list[dict[str, Any]], failed: dict[str, str]) -> None:
    if args.json:
        _print_json({"documents": documents, "failed": failed, "chunks": sum(row["chunks"] for row in documents)})
        return
    for row in documents:
        removed = f", {row['removed']} old removed" if row.get("removed") else ""
        print(f"{row['status']:<9} {row['source']}  ({row['chunks']} chunks{removed})")
    for path, reason in failed.items():
        print(f"failed    {path}: {reason}", file=sys.stderr)
    print(f"{len(documents)} document(s), {sum(row['chunks'] for row in documents)} chunks; {len(failed)} failed")


def cmd_list(args: argparse.Namespace) -> int:
    def local(client_id: str) -> list[dict[str, Any]]:
        return [
            {"source": info.source, "chunks": info.chunks, "updated_at": info.updated_at.isoformat()}
            for info in kb.list_sources(client_id=client_id)
        ]

    rows: list[dict[str, Any]] = _run(args, lambda: _call(args, "GET", "/documents"), local)
    if args.json:
        _print_json(rows)
    elif not rows:
        print(f"no documents for client '{args.client}' yet: python -m app.cli kb ingest --client {args.client} PATH")
    else:
        width = max(len(row["source"]) for row in rows)
        for row in rows:
            print(f"{row['source']:<{width}}  {row['chunks']:>5} chunks  updated {row['updated_at']}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    def local(client_id: str) -> dict[str, Any]:
        deleted = kb.delete_source(client_id=client_id, source=args.source)
        if not deleted:
            raise _Failed(f"no document '{args.source}' for client '{args.client}'")
        return {"source": args.source, "deleted": deleted}

    answer = _run(args, lambda: _call(args, "DELETE", f"/documents/{quote(args.source)}"), local)
    if args.json:
        _print_json(answer)
    else:
        print(f"deleted {answer['source']} ({answer['deleted']} chunks)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    def local(client_id: str) -> list[dict[str, Any]]:
        hits = kb.search(client_id=client_id, query=args.query, limit=args.limit)
        return [{"text": hit.text, "score": hit.score, "source": hit.source, "heading": hit.heading} for hit in hits]

    remote = lambda: _call(args, "GET", "/search", params={"q": args.query, "limit": args.limit})  # noqa: E731
    hits: list[dict[str, Any]] = _run(args, remote, local)
    if args.json:
        _print_json(hits)
        return 0
    if not hits:
        print(f"nothing found for client '{args.client}'")
    for rank, hit in enumerate(hits, start=1):
        relevant = "" if hit["score"] >= settings.kb_min_score else "  (below kb_min_score: not used for answers)"
        print(f"{rank}. {hit['score']:.3f}  {hit['source']}  {hit['heading'] or '-'}{relevant}")
        excerpt = " ".join(hit["text"].split())
        print(f"   {excerpt[:_EXCERPT]}{'…' if len(excerpt) > _EXCERPT else ''}")
    return 0


# --- what the bot could not answer, and what managers answered instead -------------------------------


def cmd_gaps(args: argparse.Namespace) -> int:
    """The questions the bot found nothing for in the last days, similar ones together, the most asked first."""
    with session_scope() as session:
        client = clients.get_by_slug(session, args.client)
        since = db_now(session) - timedelta(days=args.days)
        found = gaps.groups(session, client_id=client.id, since=since)
    if args.json:
        _print_json([asdict(group) for group in found])
        return 0
    if not found:
        print(f"no unanswered questions of '{args.client}' in the last {args.days} days")
    for group in found:
        called = f", a manager called {group.handovers}×" if group.handovers else ""
        print(f"{group.count:>4}×  {_one_line(group.question)}  (last {group.last_at:%Y-%m-%d %H:%M}{called})")
        for example in group.examples:
            print(f"       also: {_one_line(example)}")
    return 0


def cmd_suggestions(args: argparse.Namespace) -> int:
    """Managers' answers to questions the bot could not answer, waiting for `kb accept` or `kb reject`."""
    with session_scope() as session:
        client = clients.get_by_slug(session, args.client)
        suggestions.collect(session, client_id=client.id)
        wanted = None if args.all else SuggestionStatus.PENDING
        rows: list[dict[str, str]] = [
            {
                "id": str(s.id),
                "status": s.status.value,
                "question": s.question,
                "answer": s.answer,
                "manager": s.manager or "?",
                "created_at": s.created_at.isoformat(),
                "source": s.source or "",
            }
            for s in suggestions.listed(session, client_id=client.id, status=wanted)
        ]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print(f"no suggestions of '{args.client}' waiting: they appear when a manager answers a question the bot could not")
    for row in rows:
        decided = "" if row["status"] == SuggestionStatus.PENDING else f"  [{row['status']}]"
        print(f"{row['id'][:8]}  {row['created_at'][:16]}  by {row['manager']}{decided}")
        print(f"   Q: {_one_line(row['question'])}")
        print(f"   A: {_one_line(row['answer'])}")
    if rows and not args.all:
        print(f"accept: python -m app.cli kb accept --client {args.client} ID [--edit]; reject: kb reject --client {args.client} ID")
    return 0


def _pending(session: Session, args: argparse.Namespace, *, lock: bool = False) -> Suggestion:
    client = clients.get_by_slug(session, args.client)
    try:
        found = suggestions.find(session, client_id=client.id, id_prefix=args.id, lock=lock)
    except suggestions.SuggestionNotFound:
        raise _Failed(f"no suggestion of '{args.client}' with id {args.id} (kb suggestions --client {args.client} lists them)") from None
    if found.status != SuggestionStatus.PENDING:
        raise _Failed(f"suggestion {args.id} is already {found.status}")
    return found


def cmd_accept(args: argparse.Namespace) -> int:
    """Add a suggestion to the client's knowledge base as a Q&A entry (as it is, or as edited)."""
    with session_scope() as session:
        found = _pending(session, args)
        suggestion_id, question, answer = found.id, found.question, found.answer
    question, answer = args.question or question, args.answer or answer
    if args.edit:
        question, answer = _edited(question, answer)
    try:
        document = suggestions.entry(suggestion_id, question=question, answer=answer)
    except ValueError as exc:
        raise _Failed(f"{exc}: nothing added") from None

    def remote() -> Any:
        return _call(args, "POST", "/documents", files={"file": (document.source, document.data)}, timeout=_INGEST_TIMEOUT)

    _run(args, remote, lambda client_id: kb.ingest_bytes(client_id=client_id, source=document.source, data=document.data))
    with session_scope() as session:
        suggestions.accept(session, _pending(session, args, lock=True), document, question=question, answer=answer)
    if args.json:
        _print_json({"id": str(suggestion_id), "source": document.source, "question": question, "answer": answer})
    else:
        print(f"added to the knowledge base of '{args.client}' as {document.source}: the bot answers this question from now on")
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    with session_scope() as session:
        suggestions.reject(session, _pending(session, args, lock=True))
    print(f"suggestion {args.id} rejected: nothing added to the knowledge base")
    return 0


_EDIT_HELP = "# The question, then a line with three dashes, then the answer. Lines starting with # are left out.\n"


def _edited(question: str, answer: str) -> tuple[str, str]:
    """The question and answer as the operator leaves them in $VISUAL / $EDITOR."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", encoding="utf-8", delete=False) as draft:
        draft.write(f"{_EDIT_HELP}{question}\n---\n{answer}\n")
    path = Path(draft.name)
    try:
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        if subprocess.run([*shlex.split(editor), str(path)], check=False).returncode != 0:
            raise _Failed(f"the editor ({editor}) failed: nothing added")
        text = "\n".join(line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#"))
    finally:
        path.unlink(missing_ok=True)
    edited_question, separator, edited_answer = text.partition("\n---\n")
    if not separator:
        raise _Failed("the edited text has no line with --- between the question and the answer: nothing added")
    return edited_question.strip(), edited_answer.strip()


def _one_line(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except _Failed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return run


def add_kb_commands(subparsers: Any) -> None:
    """Register `kb ingest|list|delete|search` on the CLI's subparsers."""
    command = subparsers.add_parser("kb", help="a client's knowledge base: ingest, list, delete, search; gaps and suggestions")
    actions = command.add_subparsers(dest="action", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--client", required=True, help="the client's slug")
    common.add_argument("--url", default=os.environ.get("TRUFFLES_URL", _DEFAULT_URL), help="the running service (env TRUFFLES_URL)")
    common.add_argument("--json", action="store_true", help="print JSON")

    ingest = actions.add_parser("ingest", parents=[common], help="add or replace documents (files or folders)")
    ingest.add_argument("paths", nargs="+", type=Path, metavar="PATH", help=".md .txt .yaml .yml .json .pdf .docx, or a folder")
    ingest.set_defaults(func=_guarded(cmd_ingest))
    listing = actions.add_parser("list", parents=[common], help="the client's documents")
    listing.set_defaults(func=_guarded(cmd_list))
    delete = actions.add_parser("delete", parents=[common], help="delete one document by its source name")
    delete.add_argument("source")
    delete.set_defaults(func=_guarded(cmd_delete))
    search = actions.add_parser("search", parents=[common], help="the best-matching chunks for a query, with scores")
    search.add_argument("query")
    search.add_argument("--limit", type=int, default=5, choices=range(1, 21), metavar="N", help="how many results (1-20)")
    search.set_defaults(func=_guarded(cmd_search))
    gaps_ = actions.add_parser("gaps", parents=[common], help="questions the bot could not answer, similar ones grouped")
    gaps_.add_argument("--days", type=int, default=30, help="how far back (default 30)")
    gaps_.set_defaults(func=_guarded(cmd_gaps))
    suggested = actions.add_parser("suggestions", parents=[common], help="managers' answers waiting to become knowledge")
    suggested.add_argument("--all", action="store_true", help="accepted and rejected ones too")
    suggested.set_defaults(func=_guarded(cmd_suggestions))
    accept = actions.add_parser("accept", parents=[common], help="add a suggestion to the knowledge base as a Q&A entry")
    accept.add_argument("id", help="the suggestion's id (its first 8 characters will do)")
    accept.add_argument("--edit", action="store_true", help="edit the question and answer in $EDITOR first")
    accept.add_argument("--question", help="store this question instead")
    accept.add_argument("--answer", help="store this answer instead")
    accept.set_defaults(func=_guarded(cmd_accept))
    reject = actions.add_parser("reject", parents=[common], help="drop a suggestion: nothing is added")
    reject.add_argument("id")
    reject.set_defaults(func=_guarded(cmd_reject))
