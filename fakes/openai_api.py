"""Fake OpenAI API: chat completions and embeddings, in the wire format the official SDK parses."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import struct
import time
import uuid
from collections import deque
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from fakes.base import FakeServer, RecordedRequest, Response

ReplyFn = Callable[[dict[str, Any]], str]

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", "service_unavailable"),
}


class FakeOpenAI(FakeServer):
    """`POST /v1/chat/completions` and `POST /v1/embeddings`; point the SDK at base_url=fake.base_url."""

    name = "openai"

    def __init__(
        self,
        *,
        port: int = 0,
        latency: float = 0.0,
        reply: str | ReplyFn | None = None,
        api_key: str | None = None,
        embedding_dim: int = 1536,
    ) -> None:
        super().__init__(port=port, latency=latency)
        self.api_key = api_key  # None: any bearer token is accepted
        self.embedding_dim = embedding_dim
        self._default_reply = reply
        self._reply: str | ReplyFn | None = reply
        self._script: deque[str] = deque()

    @property
    def base_url(self) -> str:
        """What to pass as the SDK's base_url (OPENAI_BASE_URL)."""
        return self.url + "/v1"

    # --- programming replies ---------------------------------------------------------------------------
    def set_reply(self, reply: str | ReplyFn | None) -> None:
        """Every chat completion answers this text, or reply(request_json); None restores the echo default."""
        self._reply = reply

    def script(self, *replies: str) -> None:
        """Queue replies used one per completion (before set_reply/the default)."""
        with self._lock:
            self._script.extend(replies)

    def reset_state(self) -> None:
        self._script.clear()
        self._reply = self._default_reply

    # --- faults in OpenAI's error format ---------------------------------------------------------------
    def rate_limit(self, *, retry_after: float = 1, times: int | None = 1, path: str | None = None) -> None:
        """429 with a retry-after header (openai.RateLimitError)."""
        self.fail(429, times=times, path=path, headers={"retry-after": str(retry_after)})

    def server_error(self, status: int = 500, *, times: int | None = 1, path: str | None = None) -> None:
        """500/502/503 (openai.InternalServerError)."""
        self.fail(status, times=times, path=path)

    def error_response(self, status: int, message: str | None) -> Response:
        kind, code = _ERROR_TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
        if message is None:
            message = {429: "Rate limit reached for requests", 401: "Incorrect API key provided"}.get(status, f"Fake error {status}")
        return Response(status, {"error": {"message": message, "type": kind, "param": None, "code": code}})

    # --- inspection ------------------------------------------------------------------------------------
    def chat_requests(self) -> list[dict[str, Any]]:
        """JSON bodies of answered chat completion requests, oldest first."""
        return [r.json for r in self.requests_to("/chat/completions") if r.status == 200]

    def embedding_requests(self) -> list[dict[str, Any]]:
        """JSON bodies of answered embedding requests, oldest first."""
        return [r.json for r in self.requests_to("/embeddings") if r.status == 200]

    # --- handlers --------------------------------------------------------------------------------------
    def handle(self, request: RecordedRequest) -> Response:
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self.error_response(401, None)
        if request.method != "POST":
            return self.error_response(404, f"Unknown request URL: {request.method} {request.path}")
        if not isinstance(request.json, dict):
            return self.error_response(400, "We could not parse the JSON body of your request.")
        if request.path == "/v1/chat/completions":
            return self._chat(request.json)
        if request.path == "/v1/embeddings":
            return self._embeddings(request.json)
        return self.error_response(404, f"Unknown request URL: POST {request.path}")

    def _chat(self, body: dict[str, Any]) -> Response:
        messages = body.get("messages")
        if not body.get("model") or not isinstance(messages, list) or not messages:
            return self.error_response(400, "'model' and a non-empty 'messages' are required")
        if body.get("stream"):
            return self.error_response(400, "The fake does not stream")
        schema, problem = _response_schema(body.get("response_format"))
        if problem:
            return self.error_response(400, problem)
        content = self._next_reply(body)
        if schema is not None:
            content = _structured(content, schema)
        prompt_tokens = sum(_count_tokens(_text_of(m.get("content"))) for m in messages if isinstance(m, dict))
        completion_tokens = _count_tokens(content)
        return Response(
            200,
            {
                "id": "chatcmpl-" + uuid.uuid4().hex[:24],
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )

    def _next_reply(self, body: dict[str, Any]) -> str:
        with self._lock:
            if self._script:
                return self._script.popleft()
            reply = self._reply
        if callable(reply):
            return reply(body)
        if reply is not None:
            return reply
        last_user = next((m for m in reversed(body["messages"]) if isinstance(m, dict) and m.get("role") == "user"), {})
        return "Ответ: " + _text_of(last_user.get("content"))

    def _embeddings(self, body: dict[str, Any]) -> Response:
        raw = body.get("input")
        inputs = [raw] if isinstance(raw, str) else raw
        if not body.get("model") or not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) for t in inputs):
            return self.error_response(400, "'model' and 'input' (a string or a list of strings) are required")
        dim = int(body.get("dimensions") or self.embedding_dim)
        as_base64 = body.get("encoding_format") == "base64"  # the SDK asks for base64 unless told otherwise
        data = []
        for index, text in enumerate(inputs):
            vector = embed_text(text, dim)
            encoded: Any = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode() if as_base64 else vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(_count_tokens(t) for t in inputs)
        return Response(
            200, {"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        )


# --- a deterministic model grounded in the prompt's passages (the local demo's "model") ----------------------

_PASSAGES = re.compile(r"Справочные материалы[^\n]*\n<<<\n(.*?)\n>>>", re.DOTALL)
_PASSAGE_START = re.compile(r"(?:^|\n\n)\[\d+\] ")
_GREETING = re.compile(r"\b(здравствуй\w*|привет\w*|добр\w+ (?:день|утро|вечер)|сәлем\w*|салем\w*|hello|hi)\b", re.IGNORECASE)
NOT_IN_PASSAGES = "Уточню у коллег и вернусь с ответом."


def grounded_reply(body: dict[str, Any]) -> str:
    """What a careful model would say, built without one: the line of the reference passages in the system
    prompt that shares the most words with the customer's message, with the lines of its passage that share as
    many (the first passage wins a tie, as retrieval ordered them). No passages: a greeting is greeted; anything
    else is "no knowledge" (a handoff)."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    system = " ".join(_text_of(m.get("content")) for m in messages if m.get("role") == "system")
    question = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    found = _PASSAGES.search(system)
    passages = [p.strip() for p in _PASSAGE_START.split(found.group(1)) if p.strip()] if found else []
    if not passages:
        if _GREETING.search(question):
            return "Здравствуйте! Подскажу цены, время работы и адрес — спрашивайте."
        return json.dumps({"reply": NOT_IN_PASSAGES, "handoff": "no_knowledge", "reason": "нет в материалах"}, ensure_ascii=False)
    wanted = _stems(question)
    best: list[str] = []
    best_score = -1
    for passage in passages:
        lines = passage.splitlines()
        scored = [(len(wanted & _stems(line)), line.strip()) for line in (lines[1:] if len(lines) > 1 else lines) if line.strip()]
        top = max((score for score, _ in scored), default=-1)
        if top > best_score:  # the first passage holding the best line; its lines that match as well as that one
            best, best_score = [line for score, line in scored if score == top], top
    return "\n".join(best)


def _stems(text: str) -> set[str]:
    # Russian and Kazakh inflect the ending: "маникюр" and "маникюра" share their first five letters.
    return {word[:5] for word in re.findall(r"\w+", text.lower()) if len(word) >= 3}


def _response_schema(response_format: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON schema a json_schema response_format asks for, or the error OpenAI gives for a malformed one."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None, None
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or not spec.get("name") or not isinstance(spec.get("schema"), dict):
        return None, "Missing required parameter: 'response_format.json_schema' (with 'name' and 'schema')."
    schema = spec["schema"]
    if spec.get("strict"):
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False:
            return (
                None,
                f"Invalid schema for response_format '{spec['name']}': 'additionalProperties' is required to be supplied and to be false.",
            )
        if sorted(schema.get("required") or []) != sorted(properties):
            return None, f"Invalid schema for response_format '{spec['name']}': 'required' must list every key in 'properties'."
    return schema, None


def _structured(content: str, schema: dict[str, Any]) -> str:
    """What a model held to the schema returns: a programmed JSON object as is (tests inject malformed ones
    this way); plain text becomes the first free-text field, enums their first value."""
    try:
        if isinstance(json.loads(content), dict):
            return content
    except ValueError:
        pass
    out: dict[str, Any] = {}
    text_used = False
    for name, prop in (schema.get("properties") or {}).items():
        if isinstance(prop, dict) and prop.get("enum"):
            out[name] = prop["enum"][0]
        elif isinstance(prop, dict) and prop.get("type") == "string":
            out[name] = "" if text_used else content
            text_used = True
        else:
            out[name] = None
    return json.dumps(out, ensure_ascii=False)


def embed_text(text: str, dim: int = 1536) -> list[float]:
    """Deterministic unit vector: the sum of hash-seeded word vectors, so texts sharing words are close."""
    words = re.findall(r"\w+", text.lower()) or [text]
    total = [0.0] * dim
    for word in words:
        for i, value in enumerate(_word_vector(word, dim)):
            total[i] += value
    norm = math.sqrt(sum(v * v for v in total)) or 1.0
    return [v / norm for v in total]


@lru_cache(maxsize=50_000)
def _word_vector(word: str, dim: int) -> tuple[float, ...]:
    seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "big")
    rng = random.Random(seed)
    return tuple(rng.gauss(0.0, 1.0) for _ in range(dim))


def _text_of(content: Any) -> str:
    # Content is a string or a list of parts ({"type": "text", "text": ...}).
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _count_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0
