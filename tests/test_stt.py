"""Voice notes to text through the real ElevenLabs SDK, talking HTTP to the local fake."""

import logging
import time

import pytest
from pydantic import SecretStr

from app.config import settings
from app.services.channels import stt
from app.utils.errors import ConfigError, ExternalServiceError
from fakes.elevenlabs import FakeElevenLabs
from tests.conftest import ELEVENLABS_KEY as API_KEY

VOICE = "Здравствуйте, сколько стоит маникюр?".encode()


def _transcribe(**overrides: object) -> stt.Transcript:
    args: dict[str, object] = {"audio": VOICE, "filename": "voice.ogg", "mimetype": "audio/ogg", **overrides}
    return stt.transcribe(**args)  # type: ignore[arg-type]


def test_voice_note_is_transcribed(elevenlabs: FakeElevenLabs) -> None:
    transcript = _transcribe()

    assert transcript.text == "Здравствуйте, сколько стоит маникюр?"
    assert transcript.language_code == "rus"
    [done] = elevenlabs.transcriptions()
    assert done.model_id == "scribe_v1"
    assert done.audio == VOICE
    assert done.file_name == "voice.ogg"
    assert "language_code" not in done.form  # no hint: ElevenLabs detects Russian or Kazakh itself
    [request] = elevenlabs.requests
    assert request.headers["xi-api-key"] == API_KEY
    assert request.files["file"].content_type == "audio/ogg"


def test_language_hint_is_sent(elevenlabs: FakeElevenLabs) -> None:
    transcript = _transcribe(language="kaz")

    assert elevenlabs.transcriptions()[0].language_code == "kaz"
    assert transcript.language_code == "kaz"


def test_missing_mimetype_is_guessed_from_the_file_name(elevenlabs: FakeElevenLabs) -> None:
    _transcribe(mimetype=None, filename="voice.ogg", language="kk")

    [request] = elevenlabs.requests
    assert request.files["file"].content_type == "audio/ogg"
    assert request.form["language_code"] == "kk"  # ISO-639-1 goes through as given; the API takes -1 and -3


def test_empty_transcript_is_empty_text(elevenlabs: FakeElevenLabs) -> None:
    elevenlabs.set_transcript("")

    assert _transcribe().text == ""


def test_one_server_error_is_retried_with_the_form_intact(elevenlabs: FakeElevenLabs) -> None:
    elevenlabs.server_error(500, times=1)

    assert _transcribe().text.startswith("Здравствуйте")
    # Both attempts carried model_id: the SDK's own retry (which drops form fields) never ran.
    assert elevenlabs.received_model_ids() == ["scribe_v1", "scribe_v1"]


def test_rate_limit_is_retried(elevenlabs: FakeElevenLabs) -> None:
    elevenlabs.rate_limit(times=1)

    assert _transcribe().text
    assert len(elevenlabs.requests) == 2


def test_two_server_errors_fail_after_exactly_two_attempts(elevenlabs: FakeElevenLabs, caplog: pytest.LogCaptureFixture) -> None:
    elevenlabs.server_error(500, times=2)

    with caplog.at_level(logging.WARNING, logger="app.services.channels.stt"), pytest.raises(ExternalServiceError) as failure:
        _transcribe()

    assert failure.value.service == "elevenlabs"
    assert len(elevenlabs.requests) == 2
    [logged] = [r for r in caplog.records if r.msg == "stt.failed"]
    assert logged.levelno == logging.ERROR
    assert logged.service == "elevenlabs"  # type: ignore[attr-defined]
    assert logged.status_code == 500  # type: ignore[attr-defined]
    assert API_KEY not in caplog.text


def test_wrong_key_is_not_retried(elevenlabs: FakeElevenLabs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "elevenlabs_api_key", SecretStr("revoked-key"))

    with pytest.raises(ExternalServiceError) as failure:
        _transcribe()

    assert len(elevenlabs.requests) == 1
    assert elevenlabs.requests[0].status == 401
    assert failure.value.retryable is False


def test_unreadable_audio_is_not_retried(elevenlabs: FakeElevenLabs) -> None:
    elevenlabs.fail(422, {"detail": [{"loc": ["body", "file"], "msg": "Invalid audio", "type": "value_error"}]})

    with pytest.raises(ExternalServiceError):
        _transcribe()

    assert len(elevenlabs.requests) == 1


def test_slow_service_fails_within_about_two_timeouts(elevenlabs: FakeElevenLabs, monkeypatch: pytest.MonkeyPatch) -> None:
    timeout = 0.5
    monkeypatch.setattr(settings, "elevenlabs_timeout_seconds", timeout)
    elevenlabs.delay(5, times=None)

    started = time.monotonic()
    with pytest.raises(ExternalServiceError) as failure:
        _transcribe()
    elapsed = time.monotonic() - started

    assert failure.value.retryable is True
    assert len(elevenlabs.requests) == 2
    # Two timeouts plus the short back-off, with slack for a loaded machine; unbounded would be 2 x 5 s.
    assert elapsed < 2 * timeout + 1.5


def test_missing_key_is_a_config_error(elevenlabs: FakeElevenLabs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings, "elevenlabs_api_key", None)

    with pytest.raises(ConfigError, match="ELEVENLABS_API_KEY"):
        _transcribe()

    assert not stt.is_configured()
    assert elevenlabs.requests == []


def test_client_is_built_once_per_configuration(elevenlabs: FakeElevenLabs) -> None:
    assert stt.client() is stt.client()
