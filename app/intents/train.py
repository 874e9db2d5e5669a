"""Train the intent model on the corpus's training split and write the model file (reproducible: fixed seed).

    python -m app.intents.train                     # -> app/intents/model.npz, with its cross-validation figures
    python -m app.intents.train --out /tmp/m.npz --sample 200 --folds 3

Hyper-parameters (below, `CONFIG`) and every threshold are chosen by cross-validation on the training
split only; the test split is never read here. Vectors of the corpus are cached under data/.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from app.intents import corpus
from app.intents.corpus import Example
from app.intents.decide import Thresholds, decide
from app.intents.embedding import CACHE_DIR, EMBEDDER, embed_many
from app.intents.features import FeatureSpec, features
from app.intents.labels import ESCALATE, INTENTS, Intent, IntentResult, Split
from app.intents.model import SHIPPED, IntentModel, Matrix, softmax
from app.intents.rules import classify_heuristic

Labels = npt.NDArray[np.intp]
Layers = tuple[tuple[Matrix, Matrix], ...]


@dataclass(frozen=True)
class Config:
    spec: FeatureSpec = field(default_factory=FeatureSpec)
    hidden: int = 0  # 0: softmax regression; otherwise one ReLU layer of this width
    l2: float = 1e-5
    epochs: int = 300
    learning_rate: float = 0.05
    seed: int = 15


CONFIG = Config()
RULE_PRECISION = 0.9  # a rule class may win outright only from a confidence where it is at least this precise
VETOES = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2)
# The escalate threshold is the one with the widest margin above both targets on held-out folds; the
# opt-out threshold keeps a higher precision than its target, as muting a customer by mistake costs more.
ESCALATE_TARGET = (0.92, 0.90)  # precision, recall
OPT_OUT_PRECISION = 0.98  # target 0.95
UNCLEAR = {"escalate_unclear": 0.2, "opt_out_unclear": 0.2, "settled": 0.5}


def design(vectors: Matrix, texts: Sequence[str], rules: Sequence[IntentResult], spec: FeatureSpec) -> Matrix:
    """Feature rows for many turns (see features.features)."""
    return np.stack([features(v, t, r, spec) for v, t, r in zip(vectors, texts, rules, strict=True)])


def fit(rows: Matrix, labels: Labels, config: Config) -> Layers:
    """Full-batch Adam on the class-weighted cross-entropy with L2; classes weigh as if equally frequent."""
    rng = np.random.default_rng(config.seed)
    n, width = rows.shape
    k = len(INTENTS)
    counts = np.bincount(labels, minlength=k).astype(np.float32)
    weights = (n / (k * np.maximum(counts, 1)))[labels]
    weights /= weights.sum()
    target = np.eye(k, dtype=np.float32)[labels]
    sizes = [width, config.hidden, k] if config.hidden else [width, k]
    params = []
    for fan_in, fan_out in itertools.pairwise(sizes):
        scale = np.sqrt(2.0 / fan_in) if fan_out != k else np.sqrt(1.0 / fan_in)
        params += [rng.normal(0, scale, (fan_in, fan_out)).astype(np.float32), np.zeros(fan_out, dtype=np.float32)]
    moments = [np.zeros_like(p) for p in params]
    squares = [np.zeros_like(p) for p in params]
    for step in range(1, config.epochs + 1):
        activations = [rows]
        for i in range(0, len(params) - 2, 2):
            activations.append(np.maximum(activations[-1] @ params[i] + params[i + 1], 0))
        probabilities = softmax(activations[-1] @ params[-2] + params[-1])
        delta = (probabilities - target) * weights[:, None]
        grads: list[Matrix] = [np.zeros_like(p) for p in params]
        for i in range(len(params) - 2, -1, -2):
            grads[i] = activations[i // 2].T @ delta + config.l2 * params[i]
            grads[i + 1] = delta.sum(axis=0)
            if i:
                delta = (delta @ params[i].T) * (activations[i // 2] > 0)
        for i, grad in enumerate(grads):  # Adam
            moments[i] = 0.9 * moments[i] + 0.1 * grad
            squares[i] = 0.999 * squares[i] + 0.001 * grad * grad
            corrected = moments[i] / (1 - 0.9**step), squares[i] / (1 - 0.999**step)
            params[i] -= config.learning_rate * corrected[0] / (np.sqrt(corrected[1]) + 1e-8)
    return tuple((params[i], params[i + 1]) for i in range(0, len(params), 2))


def folds(examples: Sequence[Example], count: int, seed: int) -> list[int]:
    """A fold number per example, stratified by label and language (deal each stratum round-robin after a shuffle)."""
    rng = np.random.default_rng(seed)
    fold = [0] * len(examples)
    strata: dict[tuple[str, str], list[int]] = {}
    for index, example in enumerate(examples):
        strata.setdefault((example.label, example.lang), []).append(index)
    offset = 0
    for key in sorted(strata):
        members = strata[key]
        for position, index in enumerate(rng.permutation(members)):
            fold[int(index)] = (offset + position) % count
        offset += len(members)
    return fold


def out_of_fold(rows: Matrix, labels: Labels, fold: Sequence[int], config: Config) -> Matrix:
    """Probabilities of each example from a model trained without its fold."""
    fold_array = np.asarray(fold)
    result = np.zeros((len(labels), len(INTENTS)), dtype=np.float32)
    for f in sorted(set(fold)):
        held = fold_array == f
        model = _model(fit(rows[~held], labels[~held], config), config, _provisional())
        result[held] = model.predict_rows(rows[held])
    return result


def _provisional() -> Thresholds:
    return Thresholds(rule={}, rule_veto=0.0, escalate=0.5, opt_out=0.5, **UNCLEAR)


def _model(layers: Layers, config: Config, thresholds: Thresholds, meta: dict[str, Any] | None = None) -> IntentModel:
    return IntentModel(INTENTS, layers, config.spec, thresholds, EMBEDDER, meta or {})


def combined(examples: Sequence[Example], rules: Sequence[IntentResult], probabilities: Matrix, thresholds: Thresholds) -> list[Intent]:
    """What `decide` makes of each example's rule result and model probabilities."""
    rows = (dict(zip(INTENTS, map(float, row), strict=True)) for row in probabilities)
    return [
        decide(e.text, heuristic=r, probabilities=p, thresholds=thresholds).intent for e, r, p in zip(examples, rules, rows, strict=True)
    ]


def _precision_recall(expected: Sequence[bool], got: Sequence[bool]) -> tuple[float, float]:
    tp = sum(e and g for e, g in zip(expected, got, strict=True))
    predicted, actual = sum(got), sum(expected)
    return (tp / predicted if predicted else 1.0), (tp / actual if actual else 1.0)


def rule_levels(examples: Sequence[Example], rules: Sequence[IntentResult]) -> dict[Intent, float]:
    """For each action class (and greeting), the lowest rule confidence from which its results are precise enough."""
    chosen: dict[Intent, float] = {}
    for intent in (Intent.HUMAN_REQUEST, Intent.FRUSTRATION, Intent.OPT_OUT, Intent.GREETING):
        group = ESCALATE if intent in ESCALATE else {intent}
        levels = sorted({r.confidence for r in rules if r.intent == intent})
        for level in levels:
            hits = [e.label in group for e, r in zip(examples, rules, strict=True) if r.intent == intent and r.confidence >= level]
            if len(hits) >= 5 and sum(hits) / len(hits) >= RULE_PRECISION:
                chosen[intent] = level
                break
    return chosen


def _sweep(decisions: Callable[[float], list[bool]], expected: Sequence[bool], objective: Callable[[float, float], float]) -> float:
    """The threshold (0.2 to 0.95 by 0.025) whose decisions' precision and recall score best; the lowest on ties."""
    best = (-np.inf, 0.5)
    for t in np.round(np.arange(0.2, 0.96, 0.025), 3):
        score = objective(*_precision_recall(expected, decisions(float(t))))
        if score > best[0]:
            best = (score, float(t))
    return best[1]


def _margin(precision: float, recall: float) -> float:
    return min(precision - ESCALATE_TARGET[0], recall - ESCALATE_TARGET[1])


def _recall_above(floor: float) -> Callable[[float, float], float]:
    return lambda precision, recall: recall if precision >= floor else precision - 1.0


def choose_thresholds(examples: Sequence[Example], probabilities: Matrix, rules: Sequence[IntentResult]) -> Thresholds:
    """Which rule classes win and the model's veto over them (best macro F1 of the combination on out-of-fold
    probabilities), then the escalate and opt-out thresholds, all as `decide` combines them."""
    levels = rule_levels(examples, rules)

    def outcomes(thresholds: Thresholds) -> list[Intent]:
        return combined(examples, rules, probabilities, thresholds)

    candidates = [
        Thresholds(rule={i: levels[i] for i in subset}, rule_veto=veto, escalate=0.5, opt_out=0.5, **UNCLEAR)
        for size in range(len(levels) + 1)
        for subset in itertools.combinations(sorted(levels), size)
        for veto in VETOES
    ]
    base = max(candidates, key=lambda t: scores(examples, outcomes(t))["macro_f1"])
    escalate = _sweep(
        lambda t: [i in ESCALATE for i in outcomes(replace(base, escalate=t))], [e.label in ESCALATE for e in examples], _margin
    )
    base = replace(base, escalate=escalate)
    opt_out = _sweep(
        lambda t: [i == Intent.OPT_OUT for i in outcomes(replace(base, opt_out=t))],
        [e.label == Intent.OPT_OUT for e in examples],
        _recall_above(OPT_OUT_PRECISION),
    )
    return replace(base, opt_out=opt_out)


def scores(examples: Sequence[Example], predicted: Sequence[Intent]) -> dict[str, float]:
    """Accuracy, macro F1, escalate and opt-out precision/recall."""
    f1s = []
    for intent in INTENTS:
        p, r = _precision_recall([e.label == intent for e in examples], [i == intent for i in predicted])
        f1s.append(2 * p * r / (p + r) if p + r else 0.0)
    esc = _precision_recall([e.label in ESCALATE for e in examples], [i in ESCALATE for i in predicted])
    opt = _precision_recall([e.label == Intent.OPT_OUT for e in examples], [i == Intent.OPT_OUT for i in predicted])
    return {
        "accuracy": sum(e.label == i for e, i in zip(examples, predicted, strict=True)) / len(examples),
        "macro_f1": float(np.mean(f1s)),
        "escalate_precision": esc[0],
        "escalate_recall": esc[1],
        "opt_out_precision": opt[0],
        "opt_out_recall": opt[1],
    }


def train(
    examples: Sequence[Example],
    *,
    config: Config = CONFIG,
    fold_count: int = 5,
    cache_dir: Path | None = CACHE_DIR,
    log: Callable[[str], None] = print,
) -> IntentModel:
    """Cross-validate on `examples` (the training split), choose thresholds, then fit on all of them."""
    started = time.perf_counter()
    texts = [e.text for e in examples]
    labels = np.array([INTENTS.index(e.label) for e in examples], dtype=np.intp)
    rules = [classify_heuristic(t) for t in texts]
    rows = design(embed_many(texts, cache_dir=cache_dir), texts, rules, config.spec)
    oof = out_of_fold(rows, labels, folds(examples, fold_count, config.seed), config)
    thresholds = choose_thresholds(examples, oof, rules)
    cv = {
        "model": scores(examples, [INTENTS[i] for i in oof.argmax(axis=1)]),
        "rules_and_model": scores(examples, combined(examples, rules, oof, thresholds)),
        "rules": scores(examples, [Intent(r.intent) for r in rules]),
    }
    for name, figures in cv.items():
        log(f"cv {name:<16} " + "  ".join(f"{k} {v:.3f}" for k, v in figures.items()))
    log(f"thresholds {thresholds.as_dict()}")
    meta = {
        "lines": len(examples),
        "corpus": corpus.fingerprint(examples),
        "config": {k: v for k, v in asdict(config).items() if k != "spec"},
        "cv_folds": fold_count,
        "cv": {name: {k: round(v, 4) for k, v in figures.items()} for name, figures in cv.items()},
    }
    model = _model(fit(rows, labels, config), config, thresholds, meta)
    log(f"trained on {len(examples)} lines in {time.perf_counter() - started:.1f} s")
    return model


def sample(examples: Sequence[Example], size: int, seed: int) -> list[Example]:
    """A stratified sample (every label present), for a quick run."""
    rng = np.random.default_rng(seed)
    per_label = max(2, size // len(INTENTS))
    chosen: list[Example] = []
    for intent in INTENTS:
        members = [e for e in examples if e.label == intent]
        chosen += [members[int(i)] for i in sorted(rng.permutation(len(members))[:per_label])]
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SHIPPED, help="model file to write (default: the shipped one)")
    parser.add_argument("--corpus", type=Path, default=corpus.CORPUS_DIR, help="folder of the labelled *.jsonl")
    parser.add_argument("--sample", type=int, help="train on a stratified sample of this many lines (a quick check)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds for the thresholds")
    parser.add_argument("--cache", type=Path, default=CACHE_DIR, help="where corpus vectors are cached")
    args = parser.parse_args(argv)
    examples = [e for e in corpus.load(args.corpus) if e.split == Split.TRAIN]
    if args.sample:
        examples = sample(examples, args.sample, CONFIG.seed)
    model = train(examples, fold_count=args.folds, cache_dir=args.cache)
    model.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
