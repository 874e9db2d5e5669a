"""The trained classifier: a small numpy network over `features`, shipped as model.npz and loaded once."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.intents.decide import Thresholds
from app.intents.features import FeatureSpec, Vector, features
from app.intents.labels import Intent, IntentResult

SHIPPED = Path(__file__).parent / "model.npz"
Matrix = npt.NDArray[np.float32]


def softmax(logits: Matrix) -> Matrix:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class IntentModel:
    """Weights of each layer (ReLU between them, softmax after the last), the classes in output order, the
    features it was trained with, the thresholds chosen by cross-validation, and how it was made."""

    classes: tuple[Intent, ...]
    layers: tuple[tuple[Matrix, Matrix], ...]
    spec: FeatureSpec
    thresholds: Thresholds
    embedder: str
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = SHIPPED) -> IntentModel:
        """Read a model file (the shipped one by default); see `shipped()` for the process-wide instance."""
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            layers = tuple((data[f"w{i}"].astype(np.float32), data[f"b{i}"].astype(np.float32)) for i in range(header["layers"]))
        return cls(
            classes=tuple(Intent(c) for c in header["classes"]),
            layers=layers,
            spec=FeatureSpec(**{**header["features"], "sizes": tuple(header["features"]["sizes"])}),
            thresholds=Thresholds.from_dict(header["thresholds"]),
            embedder=header["embedder"],
            meta=header["meta"],
        )

    def save(self, path: Path) -> None:
        """Write the model file: weights in float16 (the file stays small; inference is float32)."""
        header = {
            "classes": [str(c) for c in self.classes],
            "layers": len(self.layers),
            "features": asdict(self.spec),
            "thresholds": self.thresholds.as_dict(),
            "embedder": self.embedder,
            "meta": self.meta,
        }
        arrays: dict[str, Any] = {"header": np.array(json.dumps(header, ensure_ascii=False, sort_keys=True))}
        for i, (weights, bias) in enumerate(self.layers):
            arrays[f"w{i}"], arrays[f"b{i}"] = weights.astype(np.float16), bias.astype(np.float16)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            np.savez_compressed(out, **arrays)

    def features(self, embedding: npt.ArrayLike, text: str, rule: IntentResult) -> Vector:
        """The input row this model reads for a turn: its e5 query embedding, its text, the rules' result."""
        return features(embedding, text, rule, self.spec)

    def predict_rows(self, rows: Matrix) -> Matrix:
        """Class probabilities for a batch of feature rows (columns in `classes` order)."""
        hidden = rows
        for weights, bias in self.layers[:-1]:
            hidden = np.maximum(hidden @ weights + bias, 0)
        weights, bias = self.layers[-1]
        return softmax(hidden @ weights + bias)

    def predict(self, embedding: npt.ArrayLike, text: str, rule: IntentResult) -> dict[Intent, float]:
        """Probability of each class for one turn, from its e5 query embedding, its text and the rules' result."""
        probabilities = self.predict_rows(self.features(embedding, text, rule)[None, :])[0]
        return {intent: float(p) for intent, p in zip(self.classes, probabilities, strict=True)}


@lru_cache(maxsize=1)
def shipped() -> IntentModel:
    """The model file shipped in the repository, loaded on first use and kept."""
    return IntentModel.load(SHIPPED)
