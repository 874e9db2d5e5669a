"""Everything this package takes from the service modules, in one place."""

from app.services.conversation.intent import Intent, IntentResult, classify_heuristic, normalise
from app.services.knowledge.embeddings import E5Embedder, get_embedder
from app.services.knowledge.kb import query_text

__all__ = ["E5Embedder", "Intent", "IntentResult", "classify_heuristic", "get_embedder", "normalise", "query_text"]
