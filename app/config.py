"""Service settings, read once from the environment and `.env`."""

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.utils.errors import ConfigError

_PLACEHOLDER_MARKERS = ("changeme", "placeholder", "your-", "<", "xxx")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Infrastructure
    database_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/truffles"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # PostgreSQL connections (see app/db.py, connection_budget): the webhook's pool holds one per request
    # thread (API process only); every process has the pool of everything else (DB_POOL_SIZE + DB_MAX_OVERFLOW),
    # shared by its worker threads, which hold a connection only for a transaction, never across a model call
    # or a send. The defaults fit one API process and two worker processes in PostgreSQL's default 100.
    http_threads: int = 32
    db_pool_size: int = 10
    db_max_overflow: int = 5
    db_pool_timeout_seconds: float = 5.0
    # The webhook's store may wait this long on PostgreSQL (a row lock included), then answers 503 and the
    # gateway retries: a stuck lock must not hold request threads indefinitely
    webhook_db_timeout_seconds: float = 5.0
    redis_timeout_seconds: float = 2.0

    # OpenAI (chat answers, optional LLM intent classification, optional embeddings)
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_timeout_seconds: float = 20.0
    openai_max_tokens: int = 600
    history_messages: int = 12

    # ChatFlow (WhatsApp gateway). The token/instance here serve clients that have none of their own.
    chatflow_url: str | None = None
    chatflow_token: SecretStr | None = None
    chatflow_instance_id: str | None = None
    chatflow_timeout_seconds: float = 10.0

    # Telegram Bot API
    telegram_bot_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    telegram_webhook_secret: SecretStr | None = None
    telegram_timeout_seconds: float = 10.0
    alert_chat_id: int | None = None

    # ElevenLabs speech-to-text
    elevenlabs_api_key: SecretStr | None = None
    elevenlabs_base_url: str = "https://api.elevenlabs.io"
    elevenlabs_model: str = "scribe_v1"
    elevenlabs_timeout_seconds: float = 30.0
    # Hosts voice notes and files may be downloaded from (comma-separated); empty = the CHATFLOW_URL host
    media_allowed_hosts: Annotated[list[str], NoDecode] = []
    media_max_bytes: int = 20 * 1024 * 1024
    media_max_seconds: int = 600
    # Downloads may reach private/loopback/link-local addresses. Only for tests and local development
    # (the fakes listen on 127.0.0.1); in production this would let a forged mediaData.url probe the LAN.
    media_allow_private_hosts: bool = False
    media_connect_timeout_seconds: float = 3.05
    media_read_timeout_seconds: float = 15.0
    # Ceiling on one whole download (a server trickling bytes would otherwise hold a worker thread)
    media_download_timeout_seconds: float = 60.0
    # The service as reached from outside (https://bot.example.com): the webhook URLs the CLI prints, and
    # managers' files for WhatsApp, which the gateway downloads from PUBLIC_BASE_URL/media/<token>; kept in
    # MEDIA_STORE_PATH for MEDIA_TOKEN_HOURS, then removed. Unset: files are not sent, and the manager is told so.
    public_base_url: str | None = None
    media_store_path: Path = Path("./data/media")
    media_token_hours: float = 24.0

    # Qdrant: embedded on QDRANT_PATH unless QDRANT_URL or QDRANT_HOST names a server
    qdrant_url: str | None = None
    qdrant_host: str | None = None
    qdrant_port: int = 6333
    qdrant_api_key: SecretStr | None = None
    qdrant_path: Path = Path("./data/qdrant")
    qdrant_collection: str = "knowledge"
    qdrant_timeout_seconds: float = 5.0
    embedding_provider: Literal["local", "openai"] = "local"
    embedding_model: str = "text-embedding-3-small"
    # Knowledge base. Server calls retry this many times in all; local calls wait at most
    # qdrant_lock_timeout_seconds for the single embedded client (it serves one call at a time).
    qdrant_retries: int = 3
    qdrant_lock_timeout_seconds: float = 10.0
    # OpenAI embeddings only: shorten vectors (text-embedding-3-*), None = the model's full size
    embedding_dimensions: int | None = None
    kb_chunk_chars: int = 700
    kb_chunk_overlap_chars: int = 100
    # Relevance floor for answers (`judge()` in services/knowledge/kb.py), tuned on the tune split of
    # bench/fixtures/kb for the bundled e5 model (python -m bench.retrieval_bench). Re-tune when EMBEDDING_PROVIDER changes.
    kb_min_score: float = 0.83
    # Unanswered questions whose search vectors are at least this similar (cosine) are one group in `kb gaps`
    # (e5: "сколько стоит маникюр" / "какая цена на маникюр" 0.97, маникюр / педикюр 0.91)
    kb_gap_similarity: float = 0.92
    # Embedded Qdrant only: score a tenant's vectors with numpy from an in-process copy (dropped on every
    # write) instead of Qdrant's pure-Python scoring; false = always ask Qdrant (slow, for comparisons).
    kb_search_cache: bool = True
    # Largest knowledge-base file the admin API accepts; an /admin/ request body may be this plus 64 KiB
    # (every other request is capped by MAX_BODY_BYTES)
    kb_upload_max_bytes: int = 5 * 1024 * 1024
    # Stricter floor for quoting a passage verbatim when no language model is configured (`judge()`),
    # tuned the same way: the lowest score at which the top hit was right >= 90% of the time
    kb_offline_min_score: float = 0.85
    kb_top_k: int = 3

    # Application
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    debug: bool = False
    admin_token: SecretStr | None = None
    max_body_bytes: int = 256 * 1024
    # JSON nested deeper than this is refused (422) before it reaches a model: recursion is not a client's to drive
    max_json_depth: int = 32

    # Security. SECRETS_KEY: Fernet keys (comma-separated, the first encrypts, all decrypt: rotation) for the
    # gateway and bot tokens stored per client; `python -m app.cli secrets generate-key` makes one.
    secrets_key: SecretStr | None = None
    # Bearer token for /metrics; unset: /metrics answers 503 (it names every client)
    metrics_token: SecretStr | None = None
    # /health (readiness) answers from a result at most this old, so probes cannot drive dependency checks
    health_cache_seconds: float = 5.0
    # Rate limits and budgets (Redis, shared by every process); 0 = no limit. Per customer phone:
    limit_messages_per_minute: int = 20
    limit_turns_per_hour: int = 60
    limit_escalations_per_day: int = 5
    # Per client and day (a client's settings may set its own): language-model calls, seconds of audio transcribed
    limit_model_calls_per_day: int = 5000
    limit_transcription_seconds_per_day: int = 4 * 3600
    # A voice note whose duration can be neither read nor measured is transcribed only up to this size
    audio_unmeasured_max_bytes: int = 1024 * 1024
    # Retention, by the maintenance task: messages after a client's retention_days (its settings; default
    # 180), Telegram updates and finished outbox items after these days
    telegram_updates_retention_days: int = 30
    outbox_retention_days: int = 30

    # Turn processing
    buffer_wait_seconds: float = 5.0
    buffer_max_wait_seconds: float = 20.0
    # A message that reached us late (by its WhatsApp timestamp) makes its turn wait that much longer for
    # the rest of the burst, up to this; 0 turns it off (e.g. a gateway whose clock cannot be trusted)
    max_delivery_lag_seconds: float = 10.0
    worker_mode: Literal["inprocess", "off"] = "inprocess"
    # Turns answered at once per worker process: each thread mostly waits on the model or a gateway, holding
    # no PostgreSQL connection meanwhile, so threads are cheap and many (the pool above does not grow with them)
    worker_threads: int = 64
    # Of those, how many run Python at once (app/slots.py); the others wait on the model, a gateway or for a
    # slot. 0 = one per CPU
    worker_cpu_slots: int = Field(default=0, ge=0)
    # How often an idle worker process asks Redis for jobs (Dramatiq backs off up to it). Turns do not wait for
    # it: each is dispatched 2 x WORKER_POLL_MS before it is due (scheduling.py); other jobs may wait that long
    worker_poll_ms: int = 100
    # How often each worker process looks for new turns (it wakes exactly when a known one is due); keep it
    # below the shortest turn wait (0.4 x BUFFER_WAIT_SECONDS) so a new turn is never dispatched late
    dispatch_poll_ms: int = 100
    # After a pause this long (at most half the turn's wait) the turn's query is embedded ahead; 0 = never
    prefetch_pause_ms: int = 300
    # A worker's claim on a turn or an outbox item lasts this long unless its process renews it (every third
    # of it, while the work runs); a claim whose process died is taken over after at most this long
    lease_seconds: int = 15
    # How often abandoned turns and sends are looked for and re-driven (by one process per tick)
    redrive_interval_seconds: float = 5.0
    outbox_max_attempts: int = 6
    maintenance_interval_seconds: float = 15.0

    @field_validator(
        "openai_base_url",
        "chatflow_url",
        "qdrant_url",
        "qdrant_host",
        "alert_chat_id",
        "chatflow_instance_id",
        "public_base_url",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("media_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [host.strip().lower() for host in value.split(",") if host.strip()]
        return value

    @field_validator(
        "openai_api_key",
        "chatflow_token",
        "telegram_bot_token",
        "telegram_webhook_secret",
        "elevenlabs_api_key",
        "qdrant_api_key",
        "admin_token",
        mode="before",
    )
    @classmethod
    def _placeholder_secret_is_none(cls, value: object) -> object:
        """A blank or placeholder secret counts as not configured, so features fall back instead of failing late."""
        if isinstance(value, str):
            stripped = value.strip()
            if not stripped or any(marker in stripped.lower() for marker in _PLACEHOLDER_MARKERS):
                return None
        return value

    @field_validator("secrets_key", "metrics_token", mode="before")
    @classmethod
    def _blank_secret_is_none(cls, value: object) -> object:
        # Random keys may well contain "xxx": only blank or "changeme" count as not set here.
        if isinstance(value, str) and (not value.strip() or "changeme" in value.lower()):
            return None
        return value

    @property
    def qdrant_is_server(self) -> bool:
        return bool(self.qdrant_url or self.qdrant_host)

    def require(self, name: str) -> str:
        """Return a setting a feature cannot work without, or fail with one line naming the variable."""
        value = getattr(self, name)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value in (None, ""):
            raise ConfigError(f"{name.upper()} is not set: set it in the environment or .env")
        return str(value)


@lru_cache
def get_settings() -> Settings:
    return Settings()


settings = get_settings()
