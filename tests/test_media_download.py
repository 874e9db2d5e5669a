"""Fetching a customer's media file: every rule of the download guard, against a local HTTP server."""

import base64
import ipaddress
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from app.config import settings
from app.services.channels import media
from app.services.channels.media import fetch_media, is_public
from app.utils.errors import MediaRejected
from fakes.chatflow import FakeChatFlow

VOICE = b"OggS" + bytes(range(256)) * 4  # 1 KiB of "audio"
_REAL_CA_CERTS = media._CA_CERTS
Route = Callable[[BaseHTTPRequestHandler], None]


class _Handler(BaseHTTPRequestHandler):
    server: "_MediaServer"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.server.seen.append((path, self.headers.get("Host", "")))
        route = self.server.routes.get(path)
        if route is None:
            self.send_error(404)
            return
        route(self)


class _MediaServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.seen: list[tuple[str, str]] = []  # (path, Host header) of every request
        self.release = threading.Event()  # wakes handlers that stall on purpose
        self.scheme = "http"
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
            self.scheme = "https"

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the service hanging up mid-body (over the cap, timed out) is what several tests provoke

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}"

    def paths(self) -> list[str]:
        return [path for path, _host in self.seen]


def _body(data: bytes, content_type: str = "audio/ogg", status: int = 200) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    return route


def _redirect(location: str, status: int = 302) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return route


def _failing(statuses: list[int], then: Route) -> Route:
    """Answer these statuses in turn, then behave like `then`."""
    remaining = list(statuses)

    def route(handler: BaseHTTPRequestHandler) -> None:
        if remaining:
            _body(b"upstream error", "text/plain", remaining.pop(0))(handler)
        else:
            then(handler)

    return route


def _serve(server: _MediaServer) -> Iterator[_MediaServer]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def _server() -> Iterator[_MediaServer]:
    yield from _serve(_MediaServer())


def _resolve_as(mapping: dict[str, list[str]]) -> Callable[..., Any]:
    """A getaddrinfo that answers these names with these addresses, and asks the real resolver otherwise."""
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in mapping:
            return [info for address in mapping[host] for info in real_getaddrinfo(address, *args, **kwargs)]
        return real_getaddrinfo(host, *args, **kwargs)

    return getaddrinfo


@pytest.fixture
def media_host(_server: _MediaServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[_MediaServer]:
    """The local server, allowed as a media host (private addresses allowed, as only tests and dev do)."""
    _server.routes.clear()
    _server.seen.clear()
    _server.release.clear()
    monkeypatch.setattr(settings, "media_allowed_hosts", ["127.0.0.1"])
    monkeypatch.setattr(settings, "media_allow_private_hosts", True)
    monkeypatch.setattr(settings, "media_max_bytes", 64 * 1024)
    monkeypatch.setattr(settings, "media_max_seconds", 300)
    monkeypatch.setattr(settings, "media_connect_timeout_seconds", 1.0)
    monkeypatch.setattr(settings, "media_read_timeout_seconds", 2.0)
    monkeypatch.setattr(settings, "media_download_timeout_seconds", 10.0)
    yield _server
    _server.release.set()


def _rejected(media: dict[str, Any]) -> str:
    with pytest.raises(MediaRejected) as refusal:
        fetch_media(media=media)
    assert refusal.value.status_code == 422
    return refusal.value.reason


# --- happy paths ----------------------------------------------------------------------------------


def test_voice_note_is_downloaded(media_host: _MediaServer) -> None:
    media_host.routes["/media/voice.ogg"] = _body(VOICE, "audio/ogg; codecs=opus")

    blob = fetch_media(media={"url": media_host.url + "/media/voice.ogg", "mimetype": "audio/ogg; codecs=opus", "ptt": True, "seconds": 7})

    assert blob.data == VOICE
    assert blob.size == len(VOICE)
    assert blob.mimetype == "audio/ogg"
    assert blob.filename == "voice.ogg"
    assert blob.seconds == 7


def test_name_and_type_fall_back_to_the_response(media_host: _MediaServer) -> None:
    media_host.routes["/m/abc"] = _body(b"%PDF-1.4 price list", "application/pdf")

    blob = fetch_media(media={"url": media_host.url + "/m/abc", "fileName": "../../Прайс\r\n.pdf"})

    assert blob.mimetype == "application/pdf"
    assert blob.filename == "Прайс.pdf"  # no path and no line breaks from the sender survive


def test_empty_allowlist_means_the_chatflow_host(chatflow: FakeChatFlow, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "media_allowed_hosts", [])
    monkeypatch.setattr(settings, "media_allow_private_hosts", True)
    url = chatflow.host_media("note.ogg", VOICE)

    assert fetch_media(media={"url": url, "mimetype": "audio/ogg"}).data == VOICE


def test_base64_is_preferred_over_the_url(media_host: _MediaServer) -> None:
    media = {"base64": base64.b64encode(VOICE).decode(), "url": "http://evil.example/x", "mimetype": "audio/ogg", "ptt": True}

    blob = fetch_media(media=media)

    assert blob.data == VOICE
    assert media_host.seen == []


def test_base64_as_a_data_url_with_line_breaks(media_host: _MediaServer) -> None:
    encoded = base64.encodebytes(VOICE).decode()  # wrapped at 76 characters

    assert fetch_media(media={"base64": "data:audio/ogg;base64," + encoded}).data == VOICE


# --- refusals -------------------------------------------------------------------------------------


def test_bad_base64_is_refused(media_host: _MediaServer) -> None:
    assert _rejected({"base64": "not base64 at all!!"}) == "bad_base64"


def test_oversized_base64_is_refused(media_host: _MediaServer) -> None:
    assert _rejected({"base64": base64.b64encode(b"\0" * (64 * 1024 + 1)).decode()}) == "too_large"


def test_no_url_and_no_base64_is_refused(media_host: _MediaServer) -> None:
    assert _rejected({"mimetype": "audio/ogg", "url": None}) == "missing"


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/voice.ogg", "gopher://127.0.0.1:70/_x", "//127.0.0.1/x", "http:///x"]
)
def test_only_http_and_https(media_host: _MediaServer, url: str) -> None:
    assert _rejected({"url": url}) == "scheme"


def test_host_must_be_allowed(media_host: _MediaServer) -> None:
    assert _rejected({"url": "http://evil.example/voice.ogg"}) == "host_not_allowed"
    assert _rejected({"url": "http://127.0.0.1.evil.example/voice.ogg"}) == "host_not_allowed"
    assert _rejected({"url": "http://127.0.0.1@evil.example/voice.ogg"}) == "host_not_allowed"


def test_nothing_is_allowed_without_allowlist_or_chatflow_url(media_host: _MediaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "media_allowed_hosts", [])
    monkeypatch.setattr(settings, "chatflow_url", None)
    media_host.routes["/voice.ogg"] = _body(VOICE)

    assert _rejected({"url": media_host.url + "/voice.ogg"}) == "host_not_allowed"
    assert media_host.seen == []


def test_private_address_is_refused_before_connecting(media_host: _MediaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "media_allow_private_hosts", False)
    media_host.routes["/voice.ogg"] = _body(VOICE)

    assert _rejected({"url": media_host.url + "/voice.ogg"}) == "private_address"
    assert media_host.seen == []


def test_a_name_resolving_to_loopback_is_refused(media_host: _MediaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "media_allow_private_hosts", False)
    monkeypatch.setattr(settings, "media_allowed_hosts", ["localhost"])

    assert _rejected({"url": f"http://localhost:{media_host.server_address[1]}/voice.ogg"}) == "private_address"
    assert media_host.seen == []


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.10", "169.254.169.254", "100.64.0.1", "0.0.0.0",
        "224.0.0.251", "239.1.2.3", "240.0.0.1", "255.255.255.255",
        "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1",
        "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "2002:7f00:1::1", "2002:a00:1::1",
        "64:ff9b::a00:1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    ],
)  # fmt: skip
def test_internal_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2001:4860:4860::8888", "::ffff:8.8.8.8", "2a00:1450:4001:80b::200e"])
def test_public_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_connects_to_the_address_that_was_checked(media_host: _MediaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """DNS rebinding: the name is resolved once; a second, different answer is never used."""
    real_getaddrinfo = socket.getaddrinfo
    answers = iter(["127.0.0.1", "10.255.255.1"])  # the second answer would point into the LAN
    lookups: list[str] = []

    def rebinding_dns(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "media.test":
            lookups.append(host)
            return real_getaddrinfo(next(answers), *args, **kwargs)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding_dns)
    monkeypatch.setattr(settings, "media_allowed_hosts", ["media.test"])
    media_host.routes["/voice.ogg"] = _body(VOICE)
    port = media_host.server_address[1]

    assert fetch_media(media={"url": f"http://media.test:{port}/voice.ogg"}).data == VOICE
    assert lookups == ["media.test"]
    assert media_host.seen == [("/voice.ogg", f"media.test:{port}")]  # the server still sees its own name


def test_every_answer_of_the_resolver_must_be_public(media_host: _MediaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # One public and one internal answer: connecting to "the public one" is not a safe choice.
    monkeypatch.setattr(socket, "getaddrinfo", _resolve_as({"media.test": ["93.184.216.34", "127.0.0.1"]}))
    monkeypatch.setattr(settings, "media_allow_private_hosts", False)
    monkeypatch.setattr(settings, "media_allowed_hosts", ["media.test"])

    assert _rejected({"url": f"http://media.test:{media_host.server_address[1]}/voice.ogg"}) == "private_address"
    assert media_host.seen == []


def test_next_checked_address_is_tried_when_one_refuses(media_host: _MediaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Like a name with an AAAA record on a host without IPv6: the first answer cannot be reached.
    # The server listens on 127.0.0.1 only, so 127.0.0.2 refuses the connection.
    monkeypatch.setattr(socket, "getaddrinfo", _resolve_as({"media.test": ["127.0.0.2", "127.0.0.1"]}))
    monkeypatch.setattr(settings, "media_allowed_hosts", ["media.test"])
    media_host.routes["/voice.ogg"] = _body(VOICE)

    assert fetch_media(media={"url": f"http://media.test:{media_host.server_address[1]}/voice.ogg"}).data == VOICE
    assert media_host.paths() == ["/voice.ogg"]


def test_redirects_on_the_allowed_host_are_followed(media_host: _MediaServer) -> None:
    media_host.routes["/a"] = _redirect("/b", 301)
    media_host.routes["/b"] = _redirect(media_host.url + "/c", 307)
    media_host.routes["/c"] = _redirect("/voice.ogg", 302)
    media_host.routes["/voice.ogg"] = _body(VOICE)

    assert fetch_media(media={"url": media_host.url + "/a"}).data == VOICE
    assert media_host.paths() == ["/a", "/b", "/c", "/voice.ogg"]


def test_more_than_three_redirects_are_refused(media_host: _MediaServer) -> None:
    for src, dst in [("/a", "/b"), ("/b", "/c"), ("/c", "/d"), ("/d", "/voice.ogg")]:
        media_host.routes[src] = _redirect(dst)
    media_host.routes["/voice.ogg"] = _body(VOICE)

    assert _rejected({"url": media_host.url + "/a"}) == "redirect"
    assert "/voice.ogg" not in media_host.paths()


@pytest.mark.parametrize("location", ["http://evil.example/voice.ogg", "http://169.254.169.254/latest/meta-data/", "file:///etc/passwd"])
def test_redirect_off_the_allowed_hosts_is_refused(media_host: _MediaServer, monkeypatch: pytest.MonkeyPatch, location: str) -> None:
    media_host.routes["/a"] = _redirect(location)

    assert _rejected({"url": media_host.url + "/a"}) == "redirect"
    assert media_host.paths() == ["/a"]


def test_redirect_to_a_private_address_is_refused(media_host: _MediaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # The first hop is a public name; its redirect points at the loopback interface.
    real_getaddrinfo = socket.getaddrinfo

    def dns(host: Any, *args: Any, **kwargs: Any) -> Any:
        return real_getaddrinfo("127.0.0.1" if host == "cdn.test" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", dns)
    monkeypatch.setattr(media, "is_public", lambda address: str(address) != "127.0.0.2")
    monkeypatch.setattr(settings, "media_allow_private_hosts", False)
    monkeypatch.setattr(settings, "media_allowed_hosts", ["cdn.test", "127.0.0.2"])
    port = media_host.server_address[1]
    media_host.routes["/a"] = _redirect(f"http://127.0.0.2:{port}/voice.ogg")

    assert _rejected({"url": f"http://cdn.test:{port}/a"}) == "redirect"
    assert media_host.paths() == ["/a"]


def test_declared_duration_over_the_cap_is_refused(media_host: _MediaServer) -> None:
    media_host.routes["/voice.ogg"] = _body(VOICE)

    assert _rejected({"url": media_host.url + "/voice.ogg", "seconds": 301}) == "too_long"
    assert media_host.seen == []


def test_declared_size_over_the_cap_is_refused(media_host: _MediaServer) -> None:
    assert _rejected({"url": media_host.url + "/voice.ogg", "size": 64 * 1024 + 1}) == "too_large"
    assert media_host.seen == []


def test_content_length_over_the_cap_is_refused_before_the_body(media_host: _MediaServer) -> None:
    def huge(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(10**9))
        handler.end_headers()
        handler.wfile.write(b"OggS")
        handler.wfile.flush()
        media_host.release.wait(5)  # the rest never comes: reading it would hang until the read timeout

    media_host.routes["/voice.ogg"] = huge

    started = time.monotonic()
    assert _rejected({"url": media_host.url + "/voice.ogg"}) == "too_large"
    assert time.monotonic() - started < 1.5  # waiting for the body would take the 2 s read timeout


def test_a_body_growing_past_the_cap_is_cut(media_host: _MediaServer) -> None:
    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)  # HTTP/1.0, no Content-Length: the body runs until the connection closes
        handler.end_headers()
        chunk = b"\0" * 16 * 1024
        for _ in range(1000):
            handler.wfile.write(chunk)

    media_host.routes["/voice.ogg"] = endless

    assert _rejected({"url": media_host.url + "/voice.ogg"}) == "too_large"


def test_server_error_is_retried_once(media_host: _MediaServer) -> None:
    media_host.routes["/voice.ogg"] = _failing([503], _body(VOICE))

    assert fetch_media(media={"url": media_host.url + "/voice.ogg"}).data == VOICE
    assert media_host.paths() == ["/voice.ogg", "/voice.ogg"]


def test_two_server_errors_fail(media_host: _MediaServer) -> None:
    media_host.routes["/voice.ogg"] = _failing([500, 500], _body(VOICE))

    assert _rejected({"url": media_host.url + "/voice.ogg"}) == "download_failed"
    assert len(media_host.seen) == 2


def test_not_found_is_not_retried(media_host: _MediaServer) -> None:
    assert _rejected({"url": media_host.url + "/gone.ogg"}) == "download_failed"
    assert len(media_host.seen) == 1


def test_connection_refused_fails(media_host: _MediaServer) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    assert _rejected({"url": f"http://127.0.0.1:{port}/voice.ogg"}) == "download_failed"


def test_slow_server_times_out(media_host: _MediaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "media_read_timeout_seconds", 0.3)

    def silent(handler: BaseHTTPRequestHandler) -> None:
        media_host.release.wait(5)

    media_host.routes["/voice.ogg"] = silent

    started = time.monotonic()
    assert _rejected({"url": media_host.url + "/voice.ogg"}) == "download_failed"
    assert time.monotonic() - started < 2.5  # the server would stall for 5 s


def test_refusals_log_the_reason_and_host_but_never_the_url(media_host: _MediaServer, caplog: pytest.LogCaptureFixture) -> None:
    secret = "tok-5ecret"
    with caplog.at_level(logging.WARNING, logger="app.services.channels.media"):
        _rejected({"url": f"http://evil.example/files/voice.ogg?token={secret}"})
        _rejected({"url": f"{media_host.url}/missing.ogg?token={secret}"})

    events = [r for r in caplog.records if r.msg == "media.rejected"]
    assert [(r.reason, r.host) for r in events] == [("host_not_allowed", "evil.example"), ("download_failed", "127.0.0.1")]  # type: ignore[attr-defined]
    for record in events:
        assert secret not in str(record.__dict__)
    assert secret not in caplog.text


# --- https ----------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def _certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA and a certificate it signed for media.test."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    folder = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=Truffles test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)  # fmt: skip
    _openssl("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=media.test", cwd=folder)
    (folder / "leaf.ext").write_text(
        "subjectAltName=DNS:media.test\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
             "-extfile", "leaf.ext", "-out", "leaf.pem", cwd=folder)  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def _tls_server(_certificates: Path) -> Iterator[_MediaServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(_certificates / "leaf.pem", _certificates / "leaf.key")
    server = _MediaServer(context)
    server.sni = []  # type: ignore[attr-defined]
    context.sni_callback = lambda _sock, name, _ctx: server.sni.append(name)  # type: ignore[attr-defined]
    yield from _serve(server)


@pytest.fixture
def tls_host(_tls_server: _MediaServer, _certificates: Path, media_host: _MediaServer, monkeypatch: pytest.MonkeyPatch) -> _MediaServer:
    """The https server as media.test (resolving to 127.0.0.1), its CA trusted by the downloader."""
    _tls_server.routes.clear()
    _tls_server.seen.clear()
    _tls_server.sni.clear()  # type: ignore[attr-defined]
    monkeypatch.setattr(socket, "getaddrinfo", _resolve_as({"media.test": ["127.0.0.1"], "wrong.test": ["127.0.0.1"]}))
    monkeypatch.setattr(settings, "media_allowed_hosts", ["media.test", "wrong.test", "127.0.0.1"])
    monkeypatch.setattr(media, "_CA_CERTS", str(_certificates / "ca.pem"))
    return _tls_server


def _tls_url(server: _MediaServer, host: str, path: str) -> str:
    return f"https://{host}:{server.server_address[1]}{path}"


def test_https_download_checks_the_certificate_of_the_name(tls_host: _MediaServer) -> None:
    tls_host.routes["/voice.ogg"] = _body(VOICE)

    assert fetch_media(media={"url": _tls_url(tls_host, "media.test", "/voice.ogg")}).data == VOICE
    # Connected to the checked IP, yet TLS spoke to media.test: SNI and Host carry the name.
    assert tls_host.sni == ["media.test"]  # type: ignore[attr-defined]
    assert tls_host.seen == [("/voice.ogg", f"media.test:{tls_host.server_address[1]}")]


def test_https_certificate_for_another_name_is_refused(tls_host: _MediaServer) -> None:
    tls_host.routes["/voice.ogg"] = _body(VOICE)

    assert _rejected({"url": _tls_url(tls_host, "wrong.test", "/voice.ogg")}) == "download_failed"
    assert tls_host.seen == []


def test_https_certificate_from_an_unknown_ca_is_refused(tls_host: _MediaServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media, "_CA_CERTS", _REAL_CA_CERTS)  # has never heard of the test CA
    tls_host.routes["/voice.ogg"] = _body(VOICE)

    assert _rejected({"url": _tls_url(tls_host, "media.test", "/voice.ogg")}) == "download_failed"
    assert tls_host.seen == []


def test_https_redirect_down_to_http_is_refused(tls_host: _MediaServer, media_host: _MediaServer) -> None:
    media_host.routes["/voice.ogg"] = _body(VOICE)
    tls_host.routes["/a"] = _redirect(media_host.url + "/voice.ogg")  # an allowed host, but plain http

    assert _rejected({"url": _tls_url(tls_host, "media.test", "/a")}) == "redirect"
    assert media_host.seen == []
