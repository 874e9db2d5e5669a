"""A threaded local HTTP server that records requests and injects faults; the four API fakes build on it."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self, TypeVar, cast
from urllib.parse import parse_qsl, urlsplit

logger = logging.getLogger(__name__)

T = TypeVar("T")
JsonBody = dict[str, Any] | list[Any]


@dataclass
class UploadedFile:
    """One file part of a multipart body."""

    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    """A request as the fake received it, plus how it was answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, UploadedFile] = field(default_factory=dict)
    time: float = field(default_factory=time.time)
    fault: str | None = None
    status: int | None = None  # None while in flight, 0 when the connection was dropped

    @property
    def params(self) -> dict[str, Any]:
        """Query, form fields and a JSON object body merged (later wins), the way Bot-API-style servers read them."""
        merged: dict[str, Any] = {**self.query, **self.form}
        if isinstance(self.json, dict):
            merged.update(self.json)
        return merged


@dataclass
class Response:
    status: int = 200
    body: bytes | JsonBody | str = b""
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        return json.dumps(self.body, ensure_ascii=False).encode(), "application/json"


@dataclass
class Fault:
    """One programmed misbehaviour. `remaining=None` means until cleared."""

    kind: str  # "status" | "delay" | "garbage" | "drop"
    remaining: int | None
    path: str | None = None  # only requests whose path contains this
    response: Response | None = None
    seconds: float = 0.0

    def matches(self, path: str) -> bool:
        return self.path is None or self.path in path


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for handlers sleeping in a delay fault
    request_queue_size = 1024  # the default backlog of 5 drops connections under hundreds of concurrent clients
    fake: FakeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out and hang up are normal here (that is what delay faults are for).
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect
    disable_nagle_algorithm = True  # headers and body go out in separate writes: Nagle would add ~40 ms each
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle_one_request(self) -> None:
        # CPU of this thread while it reads, answers and writes one request (waiting for the next is not CPU):
        # the benchmark reports what each fake costs the machine next to what the service costs.
        started = time.thread_time()
        try:
            super().handle_one_request()
        finally:
            self.server.fake._add_cpu(time.thread_time() - started)

    def do_GET(self) -> None:
        self.server.fake._serve(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, str], dict[str, UploadedFile]]:
    """Split a multipart/form-data body into text fields and file parts (binary-safe)."""
    boundary = _header_param(content_type, "boundary")
    form: dict[str, str] = {}
    files: dict[str, UploadedFile] = {}
    if not boundary:
        return form, files
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        content = content.removesuffix(b"\r\n")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name = _header_param(disposition, "name")
        if name is None:
            continue
        filename = _header_param(disposition, "filename")
        if filename is not None or ("content-type" in headers and not headers["content-type"].startswith("text/plain")):
            files[name] = UploadedFile(filename, headers.get("content-type"), content)
        else:
            form[name] = content.decode("utf-8", "replace")
    return form, files


def _header_param(header: str, key: str) -> str | None:
    for item in header.split(";")[1:]:
        name, _, value = item.strip().partition("=")
        if name.lower() == key:
            return value.strip().strip('"')
    return None


class FakeServer:
    """Base fake: subclasses implement `handle(request) -> Response` and may override `error_response`."""

    name = "fake"

    def __init__(self, *, port: int = 0, latency: float = 0.0) -> None:
        self.port = port
        self.latency = latency  # seconds added to every answer, e.g. 0.8 for an LLM in benchmarks
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._generation = 0
        self._requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.errors: list[BaseException] = []  # exceptions raised inside the fake itself (a bug in the fake)
        self.cpu_s = 0.0  # CPU its handler threads spent on requests so far (see _Handler.handle_one_request)

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> Self:
        """Bind (port 0 = an ephemeral port) and serve in a background thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self.port), _Handler)
        self._server.fake = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.name = f"{self.name}-{self.port}"
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every open connection; sleeping handlers wake up and exit."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:40123 (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Forget recorded requests, faults and per-test state; keep constructor settings such as latency."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self.errors.clear()
            self.reset_state()

    def reset_state(self) -> None:
        """Hook for subclasses: clear their programmable state and stored data."""

    # --- faults ----------------------------------------------------------------------------------------
    def fail(
        self,
        status: int,
        body: bytes | JsonBody | str | None = None,
        *,
        times: int | None = 1,
        path: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `times` requests (None = always, until clear_faults) with this status and body."""
        response = Response(status, body, headers or {}) if body is not None else self.error_response(status, None)
        if headers and body is None:
            response.headers.update(headers)
        self._add_fault(Fault("status", times, path, response=response))

    def delay(self, seconds: float, *, times: int | None = 1, path: str | None = None) -> None:
        """Sleep this long before answering normally (a client with a shorter timeout sees a timeout)."""
        self._add_fault(Fault("delay", times, path, seconds=seconds))

    def garbage(self, *, status: int = 200, content_type: str = "text/html", times: int | None = 1, path: str | None = None) -> None:
        """Answer a body that is not JSON (an HTML error page from a proxy; content_type may claim JSON)."""
        response = Response(status, b"<html><body>502 upstream garbage \x00\xff", {"Content-Type": content_type})
        self._add_fault(Fault("garbage", times, path, response=response))

    def drop(self, *, times: int | None = 1, path: str | None = None) -> None:
        """Close the connection without answering."""
        self._add_fault(Fault("drop", times, path))

    def clear_faults(self) -> None:
        """Remove every programmed fault."""
        with self._lock:
            self._faults.clear()

    def _add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(path):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    # --- inspection ------------------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (including ones still being answered), oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """Answered requests whose path contains `path`."""
        return [r for r in self.requests if path in r.path and r.status is not None]

    def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0, message: str | None = None) -> T:
        """Block until predicate() is truthy (re-checked after every answered request); AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                generation = self._generation
            value = predicate()
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: timed out after {timeout}s waiting for {message or predicate}")
            with self._changed:
                if self._generation == generation:
                    self._changed.wait(min(remaining, 0.05))

    def wait_for_count(self, n: int, timeout: float = 5.0, path: str | None = None) -> list[RecordedRequest]:
        """Block until at least n requests (whose path contains `path`) have been answered; returns them."""

        def answered() -> list[RecordedRequest] | None:
            done = self.requests_to(path or "")
            return done if len(done) >= n else None

        return cast(list[RecordedRequest], self.wait_for(answered, timeout, message=f"{n} answered requests to {path or '*'}"))

    # --- subclass API ----------------------------------------------------------------------------------
    def handle(self, request: RecordedRequest) -> Response:
        """Answer one request (subclasses)."""
        return self.error_response(404, "Not Found")

    def error_response(self, status: int, message: str | None) -> Response:
        """The API's error format for this status (subclasses override)."""
        return Response(status, {"error": message or f"HTTP {status}"})

    # --- plumbing --------------------------------------------------------------------------------------
    def _add_cpu(self, seconds: float) -> None:
        with self._lock:
            self.cpu_s += seconds

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _serve(self, handler: _Handler) -> None:
        request = self._record(handler)
        fault = self._take_fault(request.path)
        request.fault = fault.kind if fault else None
        wait = self.latency + (fault.seconds if fault and fault.kind == "delay" else 0.0)
        if wait and self._stopping.wait(wait):
            handler.close_connection = True
            return self._finish(request, 0)
        if fault and fault.kind == "drop":
            handler.close_connection = True
            return self._finish(request, 0)
        if fault and fault.response is not None:
            response = fault.response
        else:
            try:
                response = self.handle(request)
            except Exception as exc:
                logger.exception("fake.handler_failed", extra={"fake": self.name, "path": request.path})
                with self._lock:
                    self.errors.append(exc)
                response = self.error_response(500, f"fake {self.name} crashed: {type(exc).__name__}")
        # State changed by handle() must be visible before a waiter sees this request as answered.
        self._finish(request, response.status)
        self._write(handler, response)

    def _record(self, handler: _Handler) -> RecordedRequest:
        parts = urlsplit(handler.path)
        body = handler.read_body()
        content_type = handler.headers.get("Content-Type", "")
        request = RecordedRequest(
            method=handler.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=body,
        )
        if content_type.startswith("application/json") or (not content_type and body[:1] in (b"{", b"[")):
            with contextlib.suppress(ValueError):
                request.json = json.loads(body)
        elif content_type.startswith("application/x-www-form-urlencoded"):
            request.form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        elif content_type.startswith("multipart/form-data"):
            request.form, request.files = parse_multipart(body, content_type)
        with self._lock:
            self._requests.append(request)
        return request

    def _finish(self, request: RecordedRequest, status: int) -> None:
        with self._changed:
            request.status = status
            self._generation += 1
            self._changed.notify_all()

    def _write(self, handler: _Handler, response: Response) -> None:
        payload, default_type = response.encode()
        try:
            handler.send_response(response.status)
            headers = {"Content-Type": default_type, **response.headers}
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(payload)
        except OSError:  # the client gave up (timeout) before the answer
            handler.close_connection = True
