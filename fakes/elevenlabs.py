"""Fake ElevenLabs speech-to-text: `POST /v1/speech-to-text` multipart, as the official SDK sends it."""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fakes.base import FakeServer, RecordedRequest, Response

TranscriptFn = Callable[[bytes, dict[str, str]], str]


@dataclass(frozen=True)
class Transcription:
    """One answered transcription request: what arrived and what was answered."""

    model_id: str | None
    language_code: str | None
    form: dict[str, str]
    file_name: str | None
    audio: bytes
    text: str


class FakeElevenLabs(FakeServer):
    """Speech-to-text; point the SDK at ElevenLabs(api_key=..., base_url=fake.url)."""

    name = "elevenlabs"

    def __init__(
        self,
        *,
        port: int = 0,
        latency: float = 0.0,
        api_key: str | None = "test-elevenlabs-key",
        transcript: str | TranscriptFn | None = None,
        language_code: str = "rus",
    ) -> None:
        super().__init__(port=port, latency=latency)
        self.api_key = api_key  # None: any non-empty xi-api-key is accepted
        self.language_code = language_code
        self._default_transcript = transcript
        self._transcript: str | TranscriptFn | None = transcript
        self._script: deque[str] = deque()
        self._done: list[Transcription] = []

    # --- programming -----------------------------------------------------------------------------------
    def set_transcript(self, transcript: str | TranscriptFn | None) -> None:
        """Fixed text, or transcript(audio_bytes, form) -> text; None restores the default."""
        self._transcript = transcript

    def script(self, *texts: str) -> None:
        """Queue transcripts used one per request (before set_transcript/the default)."""
        with self._lock:
            self._script.extend(texts)

    def reset_state(self) -> None:
        self._script.clear()
        self._done.clear()
        self._transcript = self._default_transcript

    def server_error(self, status: int = 500, *, times: int | None = 1) -> None:
        """500/503 in ElevenLabs' error format."""
        self.fail(status, times=times)

    def rate_limit(self, *, times: int | None = 1) -> None:
        """429 too_many_concurrent_requests."""
        self.fail(429, {"detail": {"status": "too_many_concurrent_requests", "message": "Too many concurrent requests"}}, times=times)

    # --- inspection ------------------------------------------------------------------------------------
    def transcriptions(self) -> list[Transcription]:
        """Answered transcriptions, oldest first."""
        with self._lock:
            return list(self._done)

    def received_model_ids(self) -> list[str | None]:
        """model_id of every speech-to-text request that reached the fake, faulted ones included (None = missing)."""
        return [r.form.get("model_id") for r in self.requests if r.path == "/v1/speech-to-text"]

    # --- handlers --------------------------------------------------------------------------------------
    def error_response(self, status: int, message: str | None) -> Response:
        return Response(status, {"detail": {"status": "error" if status >= 500 else "bad_request", "message": message or f"HTTP {status}"}})

    def handle(self, request: RecordedRequest) -> Response:
        key = request.headers.get("xi-api-key")
        if not key or (self.api_key is not None and key != self.api_key):
            return Response(401, {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}})
        if request.path != "/v1/speech-to-text" or request.method != "POST":
            return Response(404, {"detail": "Not Found"})
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            return _validation_error("body", "Expected multipart/form-data")
        if not request.form.get("model_id"):
            return _validation_error("model_id", "Field required")
        upload = request.files.get("file")
        if upload is None and not request.form.get("cloud_storage_url"):
            return _validation_error("file", "Either file or cloud_storage_url must be provided")
        audio = upload.data if upload else b""
        text = self._next_transcript(audio, request.form)
        with self._lock:
            self._done.append(
                Transcription(
                    model_id=request.form.get("model_id"),
                    language_code=request.form.get("language_code"),
                    form=dict(request.form),
                    file_name=upload.filename if upload else None,
                    audio=audio,
                    text=text,
                )
            )
        language = request.form.get("language_code") or self.language_code
        return Response(
            200,
            {
                "language_code": language,
                "language_probability": 0.98,
                "text": text,
                "words": _words(text),
                "transcription_id": secrets.token_hex(10),
            },
        )

    def _next_transcript(self, audio: bytes, form: dict[str, str]) -> str:
        with self._lock:
            if self._script:
                return self._script.popleft()
            transcript = self._transcript
        if callable(transcript):
            return transcript(audio, form)
        if transcript is not None:
            return transcript
        # Default: audio that is UTF-8 text "says" that text, so a test can choose what a voice note contains.
        try:
            spoken = audio.decode("utf-8").strip()
        except UnicodeDecodeError:
            spoken = ""
        return spoken or f"голосовое сообщение ({len(audio)} байт)"


def _validation_error(field: str, message: str) -> Response:
    return Response(422, {"detail": [{"loc": ["body", field], "msg": message, "type": "missing"}]})


def _words(text: str) -> list[dict[str, Any]]:
    # Word and spacing entries with made-up timings (0.3 s a word), like the real response.
    words: list[dict[str, Any]] = []
    t = 0.0
    for i, word in enumerate(text.split()):
        if i:
            words.append({"text": " ", "start": round(t, 2), "end": round(t, 2), "type": "spacing", "logprob": 0.0})
        words.append(
            {"text": word, "start": round(t, 2), "end": round(t + 0.3, 2), "type": "word", "logprob": -0.05, "speaker_id": "speaker_0"}
        )
        t += 0.35
    return words
