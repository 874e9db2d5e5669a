"""Fake ChatFlow WhatsApp gateway: the GET send API, and a place to host media the webhook points at.

The media endpoints (send-image, send-audio, send-doc, send-video) download the URL they are given, as
the real gateway does, and answer success:false when they cannot: a test that passes proves the URL
worked from outside."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass

import requests

from fakes.base import FakeServer, RecordedRequest, Response

# endpoint -> (message kind, the query parameter carrying the media URL)
_ENDPOINTS = {
    "send-text": ("text", None),
    "send-image": ("image", "imageurl"),
    "send-audio": ("audio", "audiourl"),
    "send-doc": ("document", "docurl"),
    "send-video": ("video", "videourl"),
}
_JID = re.compile(r"^\d{5,15}@s\.whatsapp\.net$")


@dataclass(frozen=True)
class SentMessage:
    """A message ChatFlow accepted for delivery."""

    kind: str  # text | image | audio | document | video
    jid: str
    text: str | None  # msg for text, caption for media
    media_url: str | None
    token: str
    instance_id: str
    message_id: str
    time: float
    media: bytes | None = None  # what the gateway downloaded from media_url
    media_type: str | None = None

    @property
    def phone(self) -> str:
        return self.jid.split("@", 1)[0]


class FakeChatFlow(FakeServer):
    """`GET /api/v1/send-text|send-image|send-audio|send-doc|send-video?token=..&instance_id=..&jid=..`."""

    name = "chatflow"

    def __init__(self, *, port: int = 0, latency: float = 0.0, tokens: set[str] | None = None) -> None:
        super().__init__(port=port, latency=latency)
        self.tokens = tokens  # None: every token is valid; otherwise unknown ones get "Invalid token"
        self._sent: list[SentMessage] = []
        self._refusals: list[tuple[str, int | None]] = []  # (message, remaining) for success:false answers
        self._media: dict[str, tuple[bytes, str]] = {}

    @property
    def send_text_url(self) -> str:
        """CHATFLOW_URL for the service."""
        return self.url + "/api/v1/send-text"

    # --- modes -----------------------------------------------------------------------------------------
    def refuse(self, message: str = "Instance is not connected", *, times: int | None = 1) -> None:
        """Answer 200 {"success": false, "message": ...} to the next `times` sends (None = until clear_faults)."""
        with self._lock:
            self._refusals.append((message, times))

    def clear_faults(self) -> None:
        super().clear_faults()
        with self._lock:
            self._refusals.clear()

    def host_media(self, name: str, data: bytes, content_type: str = "audio/ogg") -> str:
        """Serve bytes at GET /media/<name> (e.g. a voice note for mediaData.url); returns the URL."""
        with self._lock:
            self._media[name] = (data, content_type)
        return f"{self.url}/media/{name}"

    def reset_state(self) -> None:
        self._sent.clear()
        self._refusals.clear()
        self._media.clear()

    # --- inspection ------------------------------------------------------------------------------------
    def sent(self, jid: str | None = None, kind: str | None = None) -> list[SentMessage]:
        """Accepted messages in order; `jid` may be a full jid or just the phone digits."""
        with self._lock:
            items = list(self._sent)
        if jid is not None:
            full = jid if "@" in jid else f"{jid}@s.whatsapp.net"
            items = [m for m in items if m.jid == full]
        return [m for m in items if kind is None or m.kind == kind]

    def sent_texts(self, jid: str | None = None) -> list[str]:
        """Delivered text messages (msg) in order."""
        return [m.text or "" for m in self.sent(jid, kind="text")]

    # --- handlers --------------------------------------------------------------------------------------
    def error_response(self, status: int, message: str | None) -> Response:
        return Response(status, {"success": False, "message": message or f"HTTP {status}"})

    def handle(self, request: RecordedRequest) -> Response:
        if request.path.startswith("/media/"):
            return self._serve_media(request.path.removeprefix("/media/"))
        endpoint = request.path.rsplit("/", 1)[-1]
        if not request.path.startswith("/api/v1/") or endpoint not in _ENDPOINTS:
            return self.error_response(404, "Not found")
        if request.method != "GET":
            return self.error_response(405, "Method not allowed")
        kind, url_param = _ENDPOINTS[endpoint]
        q = request.query
        required = ["token", "instance_id", "jid", url_param or "msg"]
        missing = [name for name in required if not q.get(name)]
        if missing:
            return self.error_response(400, "Missing required parameter: " + ", ".join(missing))
        if self.tokens is not None and q["token"] not in self.tokens:
            return Response(200, {"success": False, "message": "Invalid token"})
        if not _JID.match(q["jid"]):
            return self.error_response(400, "Invalid jid")
        media, media_type = None, None
        if url_param:
            try:  # outside the lock: the service's own server answers this download
                downloaded = requests.get(q[url_param], timeout=5)
            except requests.RequestException as exc:
                return Response(200, {"success": False, "message": f"Failed to download media: {type(exc).__name__}"})
            if downloaded.status_code != 200 or not downloaded.content:
                return Response(200, {"success": False, "message": f"Failed to download media: HTTP {downloaded.status_code}"})
            media, media_type = downloaded.content, downloaded.headers.get("Content-Type")
        with self._lock:
            if self._refusals:
                message, remaining = self._refusals[0]
                if remaining is not None:
                    if remaining <= 1:
                        self._refusals.pop(0)
                    else:
                        self._refusals[0] = (message, remaining - 1)
                return Response(200, {"success": False, "message": message})
            sent = SentMessage(
                kind=kind,
                jid=q["jid"],
                text=q.get("msg") if kind == "text" else q.get("caption"),
                media_url=q.get(url_param) if url_param else None,
                token=q["token"],
                instance_id=q["instance_id"],
                message_id="3EB0" + secrets.token_hex(8).upper(),
                time=time.time(),
                media=media,
                media_type=media_type,
            )
            self._sent.append(sent)
        return Response(200, {"success": True, "message": "Message sent", "data": {"messageId": sent.message_id}})

    def _serve_media(self, name: str) -> Response:
        with self._lock:
            item = self._media.get(name)
        if item is None:
            return self.error_response(404, "Not found")
        data, content_type = item
        return Response(200, data, {"Content-Type": content_type})
