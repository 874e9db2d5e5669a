"""A client's own labelled examples (a text,label CSV), embedded once and consulted by nearest neighbour,
so a client can correct or extend the shipped model without retraining it."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.intents.decide import Neighbour
from app.intents.labels import Intent
from app.intents.model import Matrix

MAX_EXAMPLES = 5000


@dataclass(frozen=True)
class ClientExamples:
    texts: tuple[str, ...]
    labels: tuple[Intent, ...]
    vectors: Matrix  # unit e5 query vectors, one row per example

    @classmethod
    def build(cls, rows: Iterable[tuple[str, Intent]], embed_many: Callable[[Sequence[str]], Matrix]) -> ClientExamples:
        """Embed the examples once (`embed_many` is `embedding.embed_many` in the service)."""
        pairs = list(rows)
        texts = tuple(text for text, _ in pairs)
        vectors = embed_many(texts) if texts else np.zeros((0, 0), dtype=np.float32)
        return cls(texts, tuple(label for _, label in pairs), vectors)

    def nearest(self, embedding: npt.ArrayLike, k: int = 3) -> list[Neighbour]:
        """The k examples most similar to a turn's embedding, most similar first."""
        if not self.texts:
            return []
        similarities = self.vectors @ np.asarray(embedding, dtype=np.float32)
        order = np.argsort(-similarities, kind="stable")[:k]
        return [Neighbour(self.texts[i], self.labels[i], float(similarities[i])) for i in order]


def read_csv(content: str) -> list[tuple[str, Intent]]:
    """Rows of a `text,label` CSV (a header line is optional); a bad row is an error naming its line."""
    rows: list[tuple[str, Intent]] = []
    for number, row in enumerate(csv.reader(io.StringIO(content)), 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            raise ValueError(f"line {number}: expected two columns, text and label; got {len(row)}")
        text, label = row[0].strip(), row[1].strip()
        if number == 1 and (text.lower(), label.lower()) == ("text", "label"):
            continue
        if label not in set(Intent):
            raise ValueError(f"line {number}: unknown label {label!r}; one of: {', '.join(Intent)}")
        if not text:
            raise ValueError(f"line {number}: empty text")
        rows.append((text, Intent(label)))
    if len(rows) > MAX_EXAMPLES:
        raise ValueError(f"{len(rows)} examples; at most {MAX_EXAMPLES}")
    return rows
