"""One call for the turn: rules, model and the client's examples on a message, reusing the turn's vector."""

from __future__ import annotations

import numpy.typing as npt

from app.intents.decide import Decision, decide
from app.intents.embedding import embed
from app.intents.model import IntentModel, shipped
from app.intents.neighbours import ClientExamples
from app.intents.rules import classify_heuristic


def classify(
    text: str, *, embedding: npt.ArrayLike | None = None, examples: ClientExamples | None = None, model: IntentModel | None = None
) -> Decision:
    """Decide what a turn wants. `embedding` is the turn's e5 query vector of the same text when the caller
    has it (the knowledge search computes it); without it the text is embedded here (~20-40 ms of CPU)."""
    model = model or shipped()
    rule = classify_heuristic(text)
    vector = embed(text) if embedding is None else embedding
    return decide(
        text,
        heuristic=rule,
        probabilities=model.predict(vector, text, rule),
        thresholds=model.thresholds,
        neighbours=examples.nearest(vector) if examples else (),
    )
