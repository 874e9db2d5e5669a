"""Secrets at rest. Gateway and bot tokens are encrypted (Fernet, keys from SECRETS_KEY, the first one encrypts
and every one decrypts, so keys rotate without downtime); shared secrets we only compare (a client's webhook
secret, a bot's Telegram webhook secret) are stored as a SHA-256 digest and compared in constant time.

The secrets we generate are 256 random bits, so one unsalted SHA-256 is enough to keep a leaked table from
revealing them, and it costs the webhook a microsecond instead of the milliseconds of a password hash.
"""

import hashlib
import hmac
import secrets
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.config import settings
from app.utils.errors import ConfigError

SEALED_PREFIX = "enc:v1:"
_HASH_PREFIX = "sha256:"
MIN_SHARED_SECRET_CHARS = 24

NO_KEY = "SECRETS_KEY is not set: tokens are stored encrypted (python -m app.cli secrets generate-key, then set SECRETS_KEY in .env)"


def generate_key() -> str:
    """A new Fernet key for SECRETS_KEY."""
    return Fernet.generate_key().decode()


def new_shared_secret() -> str:
    """A webhook secret: 256 random bits, URL-safe (it may travel as ?secret=)."""
    return secrets.token_urlsafe(32)


@lru_cache(maxsize=4)
def _keys(raw: str) -> MultiFernet:
    try:
        return MultiFernet([Fernet(key.strip().encode()) for key in raw.split(",") if key.strip()])
    except (ValueError, TypeError) as exc:
        raise ConfigError("SECRETS_KEY is not a valid Fernet key (32 url-safe base64-encoded bytes; several comma-separated)") from exc


def _fernet() -> MultiFernet | None:
    return _keys(settings.secrets_key.get_secret_value()) if settings.secrets_key is not None else None


def can_seal() -> bool:
    return settings.secrets_key is not None


def seal(value: str) -> str:
    """Encrypt a token for storage; ConfigError without SECRETS_KEY (never stored in plain text)."""
    fernet = _fernet()
    if fernet is None:
        raise ConfigError(NO_KEY)
    return SEALED_PREFIX + fernet.encrypt(value.encode()).decode()


def is_sealed(value: str | None) -> bool:
    return value is not None and value.startswith(SEALED_PREFIX)


def reveal(value: str | None) -> str | None:
    """The token a stored value holds. A value stored before encryption existed is returned as it is."""
    if value is None or not is_sealed(value):
        return value
    fernet = _fernet()
    if fernet is None:
        raise ConfigError(NO_KEY)
    try:
        return fernet.decrypt(value.removeprefix(SEALED_PREFIX).encode()).decode()
    except InvalidToken:
        raise ConfigError("a stored token cannot be decrypted: SECRETS_KEY lacks the key it was encrypted with") from None


def reseal(value: str) -> str:
    """The value encrypted with the current first key (a plain-text value encrypted for the first time)."""
    fernet = _fernet()
    if fernet is None:
        raise ConfigError(NO_KEY)
    if not is_sealed(value):
        return seal(value)
    try:
        return SEALED_PREFIX + fernet.rotate(value.removeprefix(SEALED_PREFIX).encode()).decode()
    except InvalidToken:
        raise ConfigError("a stored token cannot be decrypted: SECRETS_KEY lacks the key it was encrypted with") from None


def digest(secret: str) -> str:
    """What is stored of a shared secret."""
    return _HASH_PREFIX + hashlib.sha256(secret.encode()).hexdigest()


def matches(presented: str | None, stored_digest: str) -> bool:
    """Whether a presented secret is the one whose digest is stored, in constant time."""
    return hmac.compare_digest(digest(presented or "").encode(), stored_digest.encode())
