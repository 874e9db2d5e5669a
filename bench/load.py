"""The load generator, a process of its own: `python -m bench.load` reads one JSON job on stdin and prints
one JSON result on stdout.

A small HTTP/1.1 keep-alive client on asyncio (uvloop when installed) rather than httpx: on 2 shared
cores the generator must cost a fraction of what it measures. Jobs:

- closed: `concurrency` connections each post back-to-back for `duration` seconds (throughput);
- open: requests start at a fixed `rate` whatever the answers do, latency counted from the planned
  start, so a stall shows up in the percentiles instead of slowing the generator (coordinated omission);
- conversations: each conversation posts a burst of messages `gap` seconds apart, starts spread over
  `ramp` seconds; the wall time of each conversation's last message is returned for the end-to-end figures.

Every loop is bounded by a count or a deadline, and every request by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

REQUEST_TIMEOUT_SECONDS = 10.0
MAX_OPEN_CONNECTIONS = 1024
_REUSE_IDLE_S = 4.0  # below uvicorn's keep-alive timeout (5 s)

# The acknowledgement tests cycle through these.
TEXTS = ("Здравствуйте!", "Хочу записаться на маникюр в субботу", "Подскажите сколько стоит маникюр с покрытием")

# End-to-end bursts are varied per conversation, so no turn repeats another's text (a cache of query
# embeddings or answers would otherwise make the benchmark flatter the service). Each burst ends in a plain
# question: the intent heuristics are sure (no extra model call for intent), the salon's knowledge answers
# it, and the end-of-turn policy gives it the base wait (no "?", which shortens it; bench.run checks).
_NAMES = ("Айгерим", "Дана", "Асель", "Мадина", "Алия", "Жанна", "Ольга", "Сауле", "Камила", "Динара", "Томирис", "Анна", "Гульнара")
_SERVICES = ("маникюр", "педикюр", "стрижку", "окрашивание", "укладку", "наращивание ресниц", "коррекцию бровей")
_DAYS = ("понедельник", "вторник", "среду", "четверг", "пятницу", "субботу", "воскресенье")
_QUESTIONS = (
    "Подскажите сколько стоит {service} и сколько времени это займёт",
    "Скажите пожалуйста цену на {service} и есть ли свободные мастера",
    "Интересует стоимость на {service} у вас",
)


def burst_texts(burst: int, k: int = 0) -> list[str]:
    """The messages of conversation k's burst: a greeting, requests, and a question last."""
    service = _SERVICES[k % len(_SERVICES)]
    middle = f"Хочу записаться на {service} в {_DAYS[(k // 7) % 7]}, меня зовут {_NAMES[(k // 49) % len(_NAMES)]}"
    last = _QUESTIONS[(k // 3) % len(_QUESTIONS)].format(service=service)
    return ["Здравствуйте!" if i == 0 and burst > 1 else last if i == burst - 1 else middle for i in range(burst)]


def webhook_body(*, message_id: str, phone: str, text: str, timestamp: int) -> bytes:
    """A ChatFlow webhook delivery of one customer text message."""
    payload = {
        "messageType": "text",
        "message": text,
        "metadata": {"sender": "Bench", "timestamp": timestamp, "messageId": message_id, "remoteJid": f"{phone}@s.whatsapp.net"},
        "mediaData": None,
    }
    return json.dumps(payload, ensure_ascii=False).encode()


def phone_of(prefix_digit: int, index: int) -> str:
    """A distinct 11-digit Kazakh-looking number per (run part, index)."""
    return f"77{prefix_digit % 10}{index:08d}"


class HttpError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection: write a request, read exactly one response."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used_at = 0.0

    async def post(self, path: str, body: bytes) -> int:
        # As any HTTP client does: do not reuse a connection the server has closed or is about to close
        # (uvicorn closes keep-alive connections idle for 5 s; reusing one then fails mid-request).
        stale = self.reader is not None and (self.reader.at_eof() or time.monotonic() - self.used_at > _REUSE_IDLE_S)
        if stale:
            self.close()
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        headers = raw.decode("latin-1").lower()
        if "transfer-encoding: chunked" in headers:
            await self._read_chunked()
        else:
            length = 0
            for line in headers.split("\r\n"):
                if line.startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            if length:
                await self.reader.readexactly(length)
        if "connection: close" in headers:
            self.close()
        self.used_at = time.monotonic()
        return status

    async def _read_chunked(self) -> None:
        assert self.reader is not None
        for _ in range(100_000):
            size = int((await self.reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await self.reader.readline()
                return
            await self.reader.readexactly(size + 2)
        raise HttpError("endless chunked body")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

    def record(self, status: str, latency_s: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status == "200":
            self.latencies_ms.append(round(latency_s * 1000, 3))


async def _send(conn: Connection, path: str, body: bytes) -> str:
    """POST and return the status as text, or the failure's name; a failed connection is reset."""
    try:
        return str(await asyncio.wait_for(conn.post(path, body), REQUEST_TIMEOUT_SECONDS))
    except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, HttpError) as exc:
        conn.close()
        return type(exc).__name__


async def closed_loop(job: dict[str, Any]) -> dict[str, Any]:
    """`concurrency` connections posting back to back; requests finished during `warmup` are not counted."""
    host, port, path = _target(job["url"])
    concurrency, duration, warmup = int(job["concurrency"]), float(job["duration"]), float(job.get("warmup", 1.0))
    phones, part = int(job.get("phones", 1000)), int(job.get("part", 1))
    tally = Tally()
    start = time.perf_counter()
    measure_from, stop_at = start + warmup, start + warmup + duration
    counter = iter(range(10**9))

    async def worker() -> None:
        conn = Connection(host, port)
        try:
            while time.perf_counter() < stop_at:
                n = next(counter)
                body = webhook_body(
                    message_id=f"{job['run']}-c{part}-{job.get('slice', 0)}-{n}",
                    phone=phone_of(part, n % phones),
                    text=TEXTS[n % 3],
                    timestamp=int(time.time()),
                )
                sent = time.perf_counter()
                status = await _send(conn, path, body)
                if sent >= measure_from:
                    tally.record(status, time.perf_counter() - sent)
        finally:
            conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - measure_from
    return {"elapsed_s": elapsed, "latencies_ms": tally.latencies_ms, "statuses": tally.statuses}


class _Pool:
    """Idle keep-alive connections; a new one is opened when none is idle (bounded)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[Connection] = []
        self.opened = 0

    def take(self) -> Connection | None:
        if self.idle:
            return self.idle.pop()
        if self.opened >= MAX_OPEN_CONNECTIONS:
            return None
        self.opened += 1
        return Connection(self.host, self.port)

    def give(self, conn: Connection) -> None:
        self.idle.append(conn)

    def close(self) -> None:
        for conn in self.idle:
            conn.close()


async def _pooled_post(pool: _Pool, path: str, body: bytes) -> str:
    conn = pool.take()
    if conn is None:
        return "too_many_connections"
    try:
        return await _send(conn, path, body)
    finally:
        pool.give(conn)


async def open_loop(job: dict[str, Any]) -> dict[str, Any]:
    """`rate` requests per second for `duration` seconds, each timed from its planned start."""
    host, port, path = _target(job["url"])
    rate, duration = float(job["rate"]), float(job["duration"])
    phones, part = int(job.get("phones", 1000)), int(job.get("part", 2))
    pool = _Pool(host, port)
    tally = Tally()
    total = int(rate * duration)
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.05

    async def one(n: int, planned: float) -> None:
        body = webhook_body(
            message_id=f"{job['run']}-o{part}-{n}", phone=phone_of(part, n % phones), text=TEXTS[n % 3], timestamp=int(time.time())
        )
        status = await _pooled_post(pool, path, body)
        tally.record(status, time.perf_counter() - planned)

    for n in range(total):
        planned = start + n / rate
        delay = planned - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(n, planned)))
    await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_SECONDS + 5)
    late = max(0.0, time.perf_counter() - (start + duration))
    pool.close()
    return {
        "elapsed_s": duration,
        "latencies_ms": tally.latencies_ms,
        "statuses": tally.statuses,
        "connections": pool.opened,
        "tail_s": late,
    }


async def conversations(job: dict[str, Any]) -> dict[str, Any]:
    """Each conversation posts `burst` messages `gap` apart; returns each one's last-message wall time."""
    host, port, path = _target(job["url"])
    count, burst, gap, ramp = int(job["conversations"]), int(job["burst"]), float(job["gap"]), float(job["ramp"])
    part = int(job.get("part", 5))
    pool = _Pool(host, port)
    tally = Tally()
    last_sent: dict[str, float] = {}
    failed: dict[str, int] = {}

    async def conversation(k: int) -> None:
        await asyncio.sleep(ramp * k / max(1, count))
        phone = phone_of(part, k)
        for i, text in enumerate(burst_texts(burst, k)):
            if i:
                await asyncio.sleep(gap)
            body = webhook_body(message_id=f"{job['run']}-e{part}-{k}-{i}", phone=phone, text=text, timestamp=int(time.time()))
            wall, sent = time.time(), time.perf_counter()
            status = await _pooled_post(pool, path, body)
            tally.record(status, time.perf_counter() - sent)
            if status != "200":
                failed[phone] = failed.get(phone, 0) + 1
            last_sent[phone] = wall

    tasks = [asyncio.create_task(conversation(k)) for k in range(count)]
    await asyncio.wait(tasks, timeout=ramp + burst * (gap + REQUEST_TIMEOUT_SECONDS) + 10)
    pool.close()
    return {
        "latencies_ms": tally.latencies_ms,
        "statuses": tally.statuses,
        "last_sent": last_sent,
        "failed": failed,
        "connections": pool.opened,
    }


def _target(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the benchmark only sends to loopback addresses")
    return parts.hostname, parts.port or 80, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


_JOBS = {"closed": closed_loop, "open": open_loop, "conversations": conversations}


def main() -> None:
    """Run the job read from stdin; print its result with this process's own CPU time."""
    job = json.loads(sys.stdin.read())
    run: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        run = uvloop.run
    cpu_before = sum(os.times()[:2])
    result = run(_JOBS[job["mode"]](job))
    result["generator_cpu_s"] = round(sum(os.times()[:2]) - cpu_before, 3)
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
