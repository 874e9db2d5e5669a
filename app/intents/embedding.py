"""The e5 query embedding of a turn, computed exactly as the knowledge search computes it, so the turn's
vector can be reused; and a cache of the corpus's vectors so re-training does not embed 2,000 texts again."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from app.intents.features import Vector
from app.intents.model import Matrix
from app.services.knowledge import kb
from app.services.knowledge.embeddings import E5Embedder, get_embedder

EMBEDDER = E5Embedder.name  # the model's inputs: another embedder's vectors mean nothing to it
CACHE_DIR = Path(__file__).parents[2] / "data" / "intent-embeddings"  # data/ is not in git

_lock = threading.Lock()
_own: E5Embedder | None = None


def embedder() -> E5Embedder:
    """The service's embedder when it is the bundled e5 (one model in memory); a private e5 otherwise."""
    global _own
    shared = get_embedder()
    if isinstance(shared, E5Embedder):
        return shared
    with _lock:
        if _own is None:
            _own = E5Embedder()
        return _own


def embed(text: str) -> Vector:
    """The turn's e5 query vector. With the bundled e5 as the service's embedder it is the knowledge search's
    own vector, through its cache: whichever of the two asks first embeds the text, the other reuses it (and
    the dispatcher's prefetch has usually embedded it before the turn began)."""
    if isinstance(get_embedder(), E5Embedder):
        return np.asarray(kb.query_vector(text), dtype=np.float32)
    return np.asarray(embedder().embed_query(kb.query_text(text)), dtype=np.float32)


def embed_many(texts: Sequence[str], *, cache_dir: Path | None = CACHE_DIR) -> Matrix:
    """Query vectors of many texts (batched, equal to `embed` one by one), cached on disk by text."""
    keys = [hashlib.blake2b(kb.query_text(t).encode(), digest_size=16).hexdigest() for t in texts]
    path = cache_dir / f"{EMBEDDER}.npz" if cache_dir else None
    known: dict[str, Vector] = {}
    if path and path.exists():
        with np.load(path, allow_pickle=False) as data:
            known = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
    missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in known}.items())
    if missing:
        vectors = embedder().embed_queries([kb.query_text(t) for _, t in missing])
        known.update((k, np.asarray(v, dtype=np.float32)) for (k, _), v in zip(missing, vectors, strict=True))
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as out:
                np.savez(out, keys=np.array(list(known)), vectors=np.stack(list(known.values())))
    return np.stack([known[k] for k in keys]).astype(np.float32)
