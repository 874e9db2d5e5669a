"""Local fake HTTP servers speaking the wire protocols of OpenAI, ChatFlow, Telegram and ElevenLabs."""

from fakes.base import FakeServer, RecordedRequest, Response, UploadedFile
from fakes.chatflow import FakeChatFlow, SentMessage
from fakes.elevenlabs import FakeElevenLabs, Transcription
from fakes.openai_api import FakeOpenAI, embed_text, grounded_reply
from fakes.telegram import FakeTelegram, TgMessage, TgTopic, make_callback_update, make_message_update, make_user

__all__ = [
    "FakeChatFlow",
    "FakeElevenLabs",
    "FakeOpenAI",
    "FakeServer",
    "FakeTelegram",
    "RecordedRequest",
    "Response",
    "SentMessage",
    "TgMessage",
    "TgTopic",
    "Transcription",
    "UploadedFile",
    "embed_text",
    "grounded_reply",
    "make_callback_update",
    "make_message_update",
    "make_user",
]
