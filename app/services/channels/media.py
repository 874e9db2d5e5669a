"""Fetch a customer's media file (voice note, image, document) from ChatFlow's `mediaData`, guarded.

`mediaData.url` arrives in a webhook body, so it is treated as hostile: a forged one must not make the
service fetch from its own network (SSRF) or swallow an endless file. The guard, in order:

- `mediaData.seconds` above MEDIA_MAX_SECONDS, or `mediaData.size` above MEDIA_MAX_BYTES: refused first.
- `base64` present: preferred over the URL (no network). Decoded strictly; over MEDIA_MAX_BYTES refused.
- Otherwise the URL: http(s) only; the host must be listed in MEDIA_ALLOWED_HOSTS (empty: the host of
  CHATFLOW_URL; nothing at all when that is unset too). Exact, case-insensitive host names.
- The host is resolved once and EVERY address it resolves to must be public: private, loopback,
  link-local, multicast, reserved, unspecified, shared (100.64/10), site-local addresses are refused, for
  IPv4 and IPv6, including IPv4 addresses embedded in IPv6 (IPv4-mapped, 6to4, Teredo, NAT64).
  MEDIA_ALLOW_PRIVATE_HOSTS=true lifts this for tests and local development only.
- The connection goes to an address that was checked (urllib3 pool on the IP, Host header, and for
  https SNI + certificate check against the host name), so DNS cannot answer differently the second time.
  When one checked address refuses or times out the next is tried (at most MAX_ADDRESSES): a name with an
  AAAA record must still work from a host without IPv6.
- Redirects: followed at most 3 times, each target passing the whole guard again (scheme, allowed host,
  addresses) and never from https down to http; anything else is refused as `redirect`.
- Content-Length above the cap is refused before reading; the body is streamed and cut at the cap; no
  compression is accepted (a small gzip body could inflate past the cap).
- Connect/read timeouts plus a ceiling on the whole download; one retry on connection errors and 5xx.

Every refusal raises MediaRejected(reason) and logs `media.rejected` with the reason and the host only
(the URL may carry tokens). Reasons: missing, scheme, host_not_allowed, private_address, too_large,
too_long, redirect, bad_base64, download_failed.
"""

import base64
import binascii
import contextlib
import ipaddress
import logging
import mimetypes
import posixpath
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import urllib3
from tenacity import RetryCallState, retry, retry_if_exception_type, stop_after_attempt, wait_fixed
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from app import slots
from app.config import settings
from app.utils.errors import MediaRejected

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 3
MAX_ADDRESSES = 3
_CHUNK_BYTES = 64 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")

try:  # requests' CA bundle when present, else the system store
    import certifi

    _CA_CERTS: str | None = certifi.where()
except ImportError:  # pragma: no cover
    _CA_CERTS = None

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class MediaBlob:
    data: bytes
    mimetype: str
    filename: str
    size: int
    seconds: float | None


class _Retryable(Exception):
    """A connection error or a 5xx: worth one more try."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def fetch_media(*, media: dict[str, Any]) -> MediaBlob:
    """The bytes of a mediaData object, from its base64 or its URL; MediaRejected(reason) when refused."""
    seconds = _number(media.get("seconds"))
    host = _host_of(media.get("url"))
    if seconds is not None and seconds > settings.media_max_seconds:
        raise _reject("too_long", host, seconds=seconds)
    declared = _number(media.get("size"))
    if declared is not None and declared > settings.media_max_bytes:
        raise _reject("too_large", host, declared_bytes=int(declared))
    encoded = media.get("base64")
    content_type: str | None = None
    if isinstance(encoded, str) and encoded.strip():
        data = _decode_base64(encoded)
    else:
        url = media.get("url")
        if not isinstance(url, str) or not url.strip():
            raise _reject("missing", None)
        with slots.waiting():
            data, content_type = _download(url.strip())
    mimetype = _clean_mimetype(media.get("mimetype")) or _clean_mimetype(content_type) or "application/octet-stream"
    return MediaBlob(
        data=data,
        mimetype=mimetype,
        filename=_filename(media.get("fileName"), media.get("url"), mimetype),
        size=len(data),
        seconds=seconds,
    )


# --- base64 ---------------------------------------------------------------------------------------


def _decode_base64(encoded: str) -> bytes:
    if encoded.startswith("data:") and "," in encoded:  # a data: URL, as some gateways send
        encoded = encoded.split(",", 1)[1]
    compact = "".join(encoded.split())
    if len(compact) * 3 // 4 > settings.media_max_bytes + 3:  # refuse before decoding a huge string
        raise _reject("too_large", None, declared_bytes=len(compact) * 3 // 4)
    try:
        data = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _reject("bad_base64", None) from exc
    if not data:
        raise _reject("bad_base64", None)
    if len(data) > settings.media_max_bytes:
        raise _reject("too_large", None, declared_bytes=len(data))
    return data


# --- URL guard ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line
    addresses: tuple[str, ...]  # the checked IPs, in resolver order; connections go only to these


def _allowed_hosts() -> set[str]:
    if settings.media_allowed_hosts:
        return {h.strip().lower().rstrip(".") for h in settings.media_allowed_hosts if h.strip()}
    chatflow = _host_of(settings.chatflow_url)
    return {chatflow} if chatflow else set()


def _check(url: str, *, redirected: bool = False) -> _Target:
    """Apply the scheme, host and address rules to one URL; returns where to connect."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _reject("redirect" if redirected else "scheme", None) from exc
    host = (parts.hostname or "").lower().rstrip(".")
    cause: str | None = None
    if parts.scheme not in ("http", "https") or not host:
        cause = "scheme"
    elif host not in _allowed_hosts():
        cause = "host_not_allowed"
    if cause:
        raise _reject("redirect" if redirected else cause, host or None, cause=cause)
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = _resolve_public(host, port, redirected=redirected)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(parts.scheme, host, port, path, addresses)


def _resolve_public(host: str, port: int, *, redirected: bool) -> tuple[str, ...]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise _reject("download_failed", host, error_type=type(exc).__name__) from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise _reject("download_failed", host, error_type="no_address")
    # Every answer must be public: a name resolving to one public and one internal address is refused.
    if not settings.media_allow_private_hosts and any(not is_public(address) for address in addresses):
        raise _reject("redirect" if redirected else "private_address", host, cause="private_address")
    unique = list(dict.fromkeys(str(address) for address in addresses))
    return tuple(unique[:MAX_ADDRESSES])


def is_public(address: IPAddress) -> bool:
    """True for a globally routable unicast address, looking through IPv4-in-IPv6 wrappings."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
        if address.is_site_local:
            return False
    if address in _SHARED:
        return False
    return not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    )


# --- download -------------------------------------------------------------------------------------


def _download(url: str) -> tuple[bytes, str | None]:
    host = _host_of(url)
    target = _check(url)  # refusals here are final, never retried
    deadline = time.monotonic() + settings.media_download_timeout_seconds
    try:
        return _download_with_retry(target, deadline)
    except _Retryable as exc:
        raise _reject("download_failed", host, error_type=exc.detail) from exc


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    logger.warning("media.retry", extra={"attempt": state.attempt_number, "error_type": getattr(exc, "detail", type(exc).__name__)})


@retry(stop=stop_after_attempt(2), wait=wait_fixed(0.3), retry=retry_if_exception_type(_Retryable), before_sleep=_log_retry, reraise=True)
def _download_with_retry(first: _Target, deadline: float) -> tuple[bytes, str | None]:
    target = first
    for hop in range(MAX_REDIRECTS + 1):
        status, location, data, content_type = _get(target, deadline)
        if status in _REDIRECT_STATUSES:
            if hop == MAX_REDIRECTS or not location:
                raise _reject("redirect", target.host, cause="too_many" if location else "no_location")
            next_url = urljoin(_url_of(target), location)
            if target.scheme == "https" and urlsplit(next_url).scheme == "http":
                raise _reject("redirect", target.host, cause="downgrade")
            target = _check(next_url, redirected=True)
            continue
        if status >= 500:
            raise _Retryable(f"http_{status}")
        if status != 200:
            raise _reject("download_failed", target.host, status_code=status)
        return data, content_type
    raise AssertionError("unreachable")  # pragma: no cover


def _pool(target: _Target, address: str) -> urllib3.HTTPConnectionPool:
    timeout = urllib3.Timeout(connect=settings.media_connect_timeout_seconds, read=settings.media_read_timeout_seconds)
    if target.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address,
            target.port,
            timeout=timeout,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=_CA_CERTS,
            server_hostname=target.host,
            assert_hostname=target.host,
        )
    return urllib3.HTTPConnectionPool(address, target.port, timeout=timeout, retries=False)


def _open(target: _Target, deadline: float) -> tuple[urllib3.HTTPConnectionPool, urllib3.BaseHTTPResponse]:
    """Send the GET to the first checked address that accepts a connection."""
    default_port = 443 if target.scheme == "https" else 80
    name = f"[{target.host}]" if ":" in target.host else target.host
    host_header = name if target.port == default_port else f"{name}:{target.port}"
    headers = {"Host": host_header, "Accept-Encoding": "identity", "User-Agent": "truffles-media/1"}
    unreachable = "no_address"
    for address in target.addresses:
        if time.monotonic() > deadline:
            raise _reject("download_failed", target.host, error_type="deadline")
        pool = _pool(target, address)
        try:
            return pool, pool.urlopen("GET", target.path, headers=headers, redirect=False, retries=False, preload_content=False)
        except (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError) as exc:
            pool.close()
            unreachable = type(exc).__name__  # this address is down or unroutable: the next one may not be
        except ProtocolError as exc:  # connected, then dropped before an answer: worth the one retry
            pool.close()
            raise _Retryable(type(exc).__name__) from exc
        except Urllib3Error as exc:  # read timeout on the headers, TLS failure...
            pool.close()
            raise _reject("download_failed", target.host, error_type=type(exc).__name__) from exc
    raise _Retryable(unreachable)


def _get(target: _Target, deadline: float) -> tuple[int, str | None, bytes, str | None]:
    """One GET to a checked address: (status, Location, body, Content-Type). The body only for a 200."""
    pool, response = _open(target, deadline)
    try:
        content_type = response.headers.get("Content-Type")
        if response.status != 200:
            return response.status, response.headers.get("Location"), b"", content_type
        encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise _reject("download_failed", target.host, error_type="content_encoding")
        length = _number(response.headers.get("Content-Length"))
        if length is not None and length > settings.media_max_bytes:
            raise _reject("too_large", target.host, declared_bytes=int(length))
        return 200, None, _read_capped(response, target.host, deadline), content_type
    finally:
        response.release_conn()
        with contextlib.suppress(Exception):
            response.close()
        pool.close()


def _read_capped(response: urllib3.BaseHTTPResponse, host: str, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.stream(_CHUNK_BYTES, decode_content=False):
            size += len(chunk)
            if size > settings.media_max_bytes:
                raise _reject("too_large", host, declared_bytes=size)
            if time.monotonic() > deadline:
                raise _reject("download_failed", host, error_type="deadline")
            chunks.append(chunk)
    except ReadTimeoutError as exc:
        raise _reject("download_failed", host, error_type=type(exc).__name__) from exc
    except ProtocolError as exc:  # the connection broke mid-body
        raise _Retryable(type(exc).__name__) from exc
    return b"".join(chunks)


# --- helpers --------------------------------------------------------------------------------------


def _reject(reason: str, host: str | None, **fields: Any) -> MediaRejected:
    logger.warning("media.rejected", extra={"reason": reason, "host": host, **fields})
    return MediaRejected(reason)


def _host_of(url: object) -> str | None:
    if not isinstance(url, str) or not url:
        return None
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    return host.lower().rstrip(".") if host else None


def _url_of(target: _Target) -> str:
    netloc = f"[{target.host}]" if ":" in target.host else target.host
    return f"{target.scheme}://{netloc}:{target.port}{target.path}"


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN is no number


def _clean_mimetype(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    cleaned = value.split(";", 1)[0].strip().lower()
    return cleaned if "/" in cleaned else None


def _filename(name: object, url: object, mimetype: str) -> str:
    if isinstance(name, str) and name.strip():
        # The sender chose this name: no directories, no control characters (it ends up in headers and logs)
        printable = "".join(ch for ch in name if ch.isprintable()).strip()
        return posixpath.basename(printable.replace("\\", "/"))[:200] or "media"
    if isinstance(url, str):
        with contextlib.suppress(ValueError):
            tail = posixpath.basename(unquote(urlsplit(url).path))
            if tail and "." in tail:
                return tail[:200]
    extension = mimetypes.guess_extension(mimetype) or ".bin"
    return "media" + extension
