"""Everything this package takes from the service modules, in one place (their paths change with #11)."""

from app.services.embedding_service import E5Embedder, get_embedder
from app.services.intent_service import IntentResult, classify_heuristic, normalise
from app.services.kb_service import _query_text as query_text

__all__ = ["E5Embedder", "IntentResult", "classify_heuristic", "get_embedder", "normalise", "query_text"]
