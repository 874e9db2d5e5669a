"""What the classifier reads: the turn's e5 query embedding, hashed character n-grams of the text, and
what the rules said (their intent and confidence, and whether the text quotes someone).

The n-grams are taken from the rules' normalised text (lower case, Latin-typed Russian turned Cyrillic,
Kazakh look-alike letters folded), so "zapishite", "запишите" and "запишитe" share most of them; they
help where the embedding is weak: typos, translit and short Kazakh words. The hash is computed in numpy
with fixed constants, so a text gets the same features in every process (Python's hash() is salted).
The rules' block lets the model learn how far to trust each rule (stacking); decide() still lets a
strong rule win outright.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.intents.decide import quotes
from app.intents.labels import IntentResult
from app.intents.rules import normalise

Vector = npt.NDArray[np.float32]

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


RULE_INTENTS = ("human_request", "frustration", "opt_out", "question", "greeting", "other")  # what the rules answer


@dataclass(frozen=True)
class FeatureSpec:
    """Which character n-grams, hashed into how many buckets (a power of two), and how much the n-gram and
    rule blocks weigh against the (unit) embedding; a weight of 0 leaves a block out."""

    sizes: tuple[int, ...] = (3, 4, 5)
    bits: int = 13
    weight: float = 1.0
    rule_weight: float = 0.5

    @property
    def dims(self) -> int:
        return 0 if self.weight == 0 else 1 << self.bits

    @property
    def rule_dims(self) -> int:
        return 0 if self.rule_weight == 0 else len(RULE_INTENTS) + 1


def _buckets(codes: npt.NDArray[np.uint64], size: int, bits: int) -> npt.NDArray[np.uint64]:
    """Bucket of every n-gram of `size` characters: FNV-1a over code points, then Fibonacci hashing."""
    count = len(codes) - size + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint64)
    hashed = np.full(count, _FNV_OFFSET ^ np.uint64(size), dtype=np.uint64)
    for offset in range(size):
        hashed = (hashed ^ codes[offset : offset + count]) * _FNV_PRIME
    return (hashed * _GOLDEN) >> np.uint64(64 - bits)


def ngrams(text: str, spec: FeatureSpec) -> Vector:
    """Log-scaled counts of the hashed n-grams of the normalised text, unit length times the spec's weight."""
    vector = np.zeros(spec.dims, dtype=np.float32)
    if not spec.dims:
        return vector
    padded = f" {normalise(text)} "
    codes = np.frombuffer(padded.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    buckets = np.concatenate([_buckets(codes, size, spec.bits) for size in spec.sizes])
    if not len(buckets):
        return vector
    vector += np.log1p(np.bincount(buckets.astype(np.intp), minlength=spec.dims)).astype(np.float32)
    return vector * np.float32(spec.weight / max(float(np.linalg.norm(vector)), 1e-9))


def rule_block(text: str, rule: IntentResult, spec: FeatureSpec) -> Vector:
    """The rule's confidence in the slot of its intent, and a quotation flag, times the spec's weight."""
    vector = np.zeros(spec.rule_dims, dtype=np.float32)
    if spec.rule_dims:
        if rule.intent in RULE_INTENTS:
            vector[RULE_INTENTS.index(rule.intent)] = rule.confidence * spec.rule_weight
        vector[-1] = spec.rule_weight if quotes(text) else 0.0
    return vector


def features(embedding: npt.ArrayLike, text: str, rule: IntentResult, spec: FeatureSpec) -> Vector:
    """One input row: the (unit) embedding, the n-gram block, the rules' block."""
    dense = np.asarray(embedding, dtype=np.float32).reshape(-1)
    return np.concatenate([dense, ngrams(text, spec), rule_block(text, rule, spec)])
