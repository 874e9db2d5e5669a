"""The two ASGI middlewares: the webhook backlog count (turns wait while deliveries queue) and the request
body size limit. Plain ASGI, so they cost a webhook no more than a function call each."""

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.services.conversation import scheduling


class WebhookBacklog:
    """Count webhook deliveries in progress, so turns can wait while deliveries queue (scheduling.py)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith("/webhook/"):
            await self.app(scope, receive, send)
            return
        scheduling.count_webhook(1)
        try:
            await self.app(scope, receive, send)
        finally:
            scheduling.count_webhook(-1)


class BodySizeLimit:
    """Reject oversize request bodies before they are read into memory (413).

    Webhooks carry a message each; only the operator's knowledge uploads (`/admin/`) may be larger.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, admin_max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.admin_max_bytes = admin_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.admin_max_bytes if scope.get("path", "").startswith("/admin/") else self.max_bytes
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > max_bytes:
                await _too_large(send)
                return
        received = 0

        async def limited_receive() -> Message:
            # A body without Content-Length (chunked) is counted as it arrives. An HTTPException, because
            # FastAPI turns anything else raised while it reads a body into a 400.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise HTTPException(413, "request body too large")
            return message

        await self.app(scope, limited_receive, send)


async def _too_large(send: Send) -> None:
    body = b'{"detail":"request body too large"}'
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
