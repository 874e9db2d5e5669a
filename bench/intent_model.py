"""Figures of the learned intent model beside the rules (printed by `python -m bench.intent_bench`).

- The corpus's test split (app/intents/corpus, never used for tuning): per-class precision and recall of
  the rules alone and of rules + model, a confusion matrix, how many turns a language model would see.
- The rules' old fixture (bench/fixtures/intents.jsonl), which nothing in the corpus was taken from. It
  has no booking or thanks class: a booking counts as right where it says question or other, thanks
  where it says other.
- Topic hold-out, the harder estimate (the test split was written by the corpus's author): for each
  trade, a model trained without any line of it, scored on all its lines; then its training lines given
  as client examples, scored on its test lines. Thresholds are the shipped model's.
- CPU time per message, with the turn's embedding given and when the text must be embedded.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.intents import corpus
from app.intents.classifier import classify
from app.intents.corpus import Example
from app.intents.decide import Decision, decide
from app.intents.embedding import embed_many, embedder
from app.intents.labels import ESCALATE, INTENTS, Intent, Lang, Split, Topic
from app.intents.model import IntentModel, shipped
from app.intents.neighbours import ClientExamples
from app.intents.rules import classify_heuristic
from app.intents.train import CONFIG, design, fit
from app.services.knowledge.kb import query_text
from bench.intent_bench import load_fixture

SHORT = {
    "human_request": "human",
    "frustration": "frust",
    "opt_out": "optout",
    "booking": "book",
    "question": "quest",
    "greeting": "greet",
    "thanks": "thank",
    "other": "other",
}


@dataclass(frozen=True)
class Scored:
    """Expected and decided intents of a set of lines, and the decisions themselves (None for rules alone)."""

    expected: list[str]
    got: list[str]
    decisions: list[Decision] | None = None

    def precision_recall(self, positive: Callable[[str], bool]) -> tuple[float, float, int]:
        tp = sum(positive(e) and positive(g) for e, g in zip(self.expected, self.got, strict=True))
        predicted, actual = sum(map(positive, self.got)), sum(map(positive, self.expected))
        return (tp / predicted if predicted else 1.0), (tp / actual if actual else 1.0), actual

    def _class(self, intent: Intent) -> dict[str, float]:
        precision, recall, lines = self.precision_recall(lambda c: c == intent)
        return {"precision": round(precision, 4), "recall": round(recall, 4), "lines": lines}

    def summary(self) -> dict[str, Any]:
        esc = self.precision_recall(lambda i: i in ESCALATE)
        opt = self.precision_recall(lambda i: i == Intent.OPT_OUT)
        figures: dict[str, Any] = {
            "lines": len(self.expected),
            "accuracy": round(sum(e == g for e, g in zip(self.expected, self.got, strict=True)) / max(1, len(self.expected)), 4),
            "escalate": {"precision": round(esc[0], 4), "recall": round(esc[1], 4), "lines": esc[2]},
            "opt_out": {"precision": round(opt[0], 4), "recall": round(opt[1], 4), "lines": opt[2]},
            "per_class": {str(i): self._class(i) for i in INTENTS if i in self.expected or i in self.got},
        }
        if self.decisions is not None:
            unclear = [d for d in self.decisions if d.unclear]
            wrong = [d for d, e in zip(self.decisions, self.expected, strict=True) if d.intent != e]
            figures["unclear"] = {"turns": len(unclear), "of_the_wrong": sum(d.unclear for d in wrong), "wrong": len(wrong)}
            figures["decided_by"] = dict(Counter(str(d.decided_by) for d in self.decisions))
        return figures


def _decide_all(model: IntentModel, texts: Sequence[str], vectors: np.ndarray, examples: ClientExamples | None = None) -> list[Decision]:
    decisions = []
    for text, vector in zip(texts, vectors, strict=True):
        rule = classify_heuristic(text)
        neighbours = examples.nearest(vector) if examples else ()
        probabilities = model.predict(vector, text, rule)
        decisions.append(decide(text, heuristic=rule, probabilities=probabilities, thresholds=model.thresholds, neighbours=neighbours))
    return decisions


def score_corpus(lines: Sequence[Example], model: IntentModel) -> dict[str, Scored]:
    """Rules alone and rules + model on corpus lines."""
    texts = [e.text for e in lines]
    decisions = _decide_all(model, texts, embed_many(texts))
    expected = [str(e.label) for e in lines]
    return {
        "rules": Scored(expected, [classify_heuristic(t).intent for t in texts]),
        "rules_and_model": Scored(expected, [str(d.intent) for d in decisions], decisions),
    }


def _as_fixture(expected: str, got: str) -> str:
    """The old fixture's classes: booking is question or other there, thanks is other."""
    if got == Intent.BOOKING:
        return expected if expected in (Intent.QUESTION, Intent.OTHER) else str(Intent.OTHER)
    return str(Intent.OTHER) if got == Intent.THANKS else got


def score_fixture(model: IntentModel) -> tuple[dict[str, Scored], Scored]:
    """Rules alone and rules + model on the old fixture (mapped to its classes), and the unmapped decisions."""
    rows = load_fixture()
    texts = [r.text for r in rows]
    decisions = _decide_all(model, texts, embed_many(texts))
    expected = [r.intent for r in rows]
    raw = Scored(expected, [str(d.intent) for d in decisions], decisions)
    mapped = [_as_fixture(e, str(d.intent)) for e, d in zip(expected, decisions, strict=True)]
    return {
        "rules": Scored(expected, [classify_heuristic(t).intent for t in texts]),
        "rules_and_model": Scored(expected, mapped, decisions),
    }, raw


def topic_holdout(model: IntentModel) -> dict[str, Any]:
    """Per trade: train without it; score all its lines, then its test lines with and without its training lines as client examples."""
    lines = corpus.load()
    vectors = dict(zip((e.text for e in lines), embed_many([e.text for e in lines]), strict=True))
    pooled: dict[str, tuple[list[str], list[str]]] = {"all_lines": ([], []), "test_lines": ([], []), "test_lines_with_examples": ([], [])}
    per_topic: dict[str, Any] = {}
    for topic in Topic:
        if topic == Topic.GENERAL:
            continue
        train = [e for e in lines if e.split == Split.TRAIN and e.topic != topic]
        held = [e for e in lines if e.topic == topic]
        texts = [e.text for e in train]
        rules = [classify_heuristic(t) for t in texts]
        rows = design(np.stack([vectors[t] for t in texts]), texts, rules, CONFIG.spec)
        labels = np.array([INTENTS.index(e.label) for e in train], dtype=np.intp)
        fold_model = IntentModel(INTENTS, fit(rows, labels, CONFIG), CONFIG.spec, model.thresholds, model.embedder)
        client = ClientExamples.build([(e.text, e.label) for e in held if e.split == Split.TRAIN], embed_many)
        test = [e for e in held if e.split == Split.TEST]
        runs = {
            "all_lines": (held, None),
            "test_lines": (test, None),
            "test_lines_with_examples": (test, client),
        }
        per_topic[topic] = {}
        for name, (subset, examples) in runs.items():
            decisions = _decide_all(fold_model, [e.text for e in subset], np.stack([vectors[e.text] for e in subset]), examples)
            expected, got = [str(e.label) for e in subset], [str(d.intent) for d in decisions]
            pooled[name][0].extend(expected)
            pooled[name][1].extend(got)
            per_topic[topic][name] = Scored(expected, got).summary()
    return {"pooled": {name: Scored(*pair).summary() for name, pair in pooled.items()}, "per_topic": per_topic}


def timing(texts: Sequence[str], model: IntentModel) -> dict[str, dict[str, float]]:
    """CPU and wall milliseconds per message: rules + model + decision with the embedding given (best of 5
    batches of 20 per message), and `classify` on a vector e5 computes right then (best of 3 single calls;
    not through the knowledge search's cache, which would answer the 2nd and 3rd call). e5's cost grows
    with the text (about 1.1 ms of CPU a token here; OMP_NUM_THREADS=1 spends ~10 % less CPU, more wall)."""
    vectors = embed_many(texts)
    e5 = embedder()

    def given(text: str, vector: np.ndarray) -> None:
        rule = classify_heuristic(text)
        decide(text, heuristic=rule, probabilities=model.predict(vector, text, rule), thresholds=model.thresholds)

    def must_embed(text: str, _vector: np.ndarray) -> None:
        classify(text, embedding=e5.embed_query(query_text(text)), model=model)

    e5.embed_query("load the engine outside the measurement")
    result: dict[str, dict[str, float]] = {}
    for name, call, repeat, batches in (
        ("embedding_given", given, 20, 5),
        ("must_embed", must_embed, 1, 3),
    ):
        cpu_per_text, wall_per_text = [], []
        for text, vector in zip(texts, vectors, strict=True):
            cpu, wall = [], []
            for _ in range(batches):
                c, w = time.process_time(), time.perf_counter()
                for _ in range(repeat):
                    call(text, vector)
                cpu.append((time.process_time() - c) / repeat * 1000)
                wall.append((time.perf_counter() - w) / repeat * 1000)
            cpu_per_text.append(min(cpu))
            wall_per_text.append(min(wall))
        result[name] = {
            "cpu_ms_mean": statistics.fmean(cpu_per_text),
            "cpu_ms_p95": float(np.percentile(cpu_per_text, 95)),
            "wall_ms_mean": statistics.fmean(wall_per_text),
            "wall_ms_p95": float(np.percentile(wall_per_text, 95)),
        }
    return result


def run(*, holdout: bool = True, timed: int = 120) -> dict[str, Any]:
    """Every figure of the model, as a dict (see `report` for the printed form)."""
    model = shipped()
    lines = corpus.load()
    test = [e for e in lines if e.split == Split.TEST]
    fixture, fixture_raw = score_fixture(model)
    scored = score_corpus(test, model)
    combined = scored["rules_and_model"]
    per_language = {}
    for lang in Lang:
        keep = [i for i, e in enumerate(test) if e.lang == lang]
        per_language[str(lang)] = Scored([combined.expected[i] for i in keep], [combined.got[i] for i in keep]).summary()["escalate"]
    results: dict[str, Any] = {
        "model": {"trained_on": model.meta.get("lines"), "cv": model.meta.get("cv"), "thresholds": model.thresholds.as_dict()},
        "test_split": {name: s.summary() for name, s in scored.items()},
        "test_split_per_language": per_language,
        "old_fixture": {name: s.summary() for name, s in fixture.items()},
        "confusion_test_split": _confusion(combined),
        "confusion_old_fixture": _confusion(fixture_raw),
    }
    if holdout:
        results["topic_holdout"] = topic_holdout(model)
    step = max(1, len(test) // timed)
    results["timing"] = timing([e.text for e in test[::step]], model)
    return results


def _confusion(scored: Scored) -> dict[str, dict[str, int]]:
    matrix: dict[str, dict[str, int]] = {}
    for expected, got in zip(scored.expected, scored.got, strict=True):
        row = matrix.setdefault(expected, {})
        row[got] = row.get(got, 0) + 1
    return matrix


def _print_scores(title: str, figures: dict[str, Any]) -> None:
    esc, opt = figures["escalate"], figures["opt_out"]
    print(
        f"{title:<17} escalate P {esc['precision']:.3f} R {esc['recall']:.3f}   opt_out P {opt['precision']:.3f} "
        f"R {opt['recall']:.3f}   accuracy {figures['accuracy']:.3f}   ({figures['lines']} lines)"
    )


def _print_per_class(results: dict[str, dict[str, Any]]) -> None:
    classes = [i for i in INTENTS if any(str(i) in r["per_class"] for r in results.values())]
    print(f"{'':<21}" + "".join(f"{SHORT[c]:>10}" for c in classes))
    for name, figures in results.items():
        cells = [figures["per_class"].get(str(c), {"precision": float("nan"), "recall": float("nan")}) for c in classes]
        print(f"{name + ' P/R':<21}" + "".join(f"{cell['precision']:>5.2f}/{cell['recall']:.2f}" for cell in cells))


def _print_confusion(matrix: dict[str, dict[str, int]]) -> None:
    rows = [i for i in INTENTS if str(i) in matrix]
    corner = "expected \\ got"
    print(f"{corner:<15}" + "".join(f"{SHORT[c]:>7}" for c in INTENTS))
    for row in rows:
        print(f"{row:<15}" + "".join(f"{matrix[row].get(str(c), 0) or '.':>7}" for c in INTENTS))


def report(results: dict[str, Any]) -> None:
    """Print the figures."""
    cv = results["model"]["cv"] or {}
    print(f"\n== Learned model beside the rules (app/intents, trained on {results['model']['trained_on']} lines)")
    if cv:
        print("cross-validation on the training split (what chose the thresholds):")
        for name in ("rules", "rules_and_model"):
            f = cv[name]
            print(
                f"  {name:<16} escalate P {f['escalate_precision']:.3f} R {f['escalate_recall']:.3f}   "
                f"opt_out P {f['opt_out_precision']:.3f} R {f['opt_out_recall']:.3f}   accuracy {f['accuracy']:.3f}"
            )
    test = results["test_split"]
    print(f"\n== Corpus test split ({test['rules']['lines']} lines, never used for tuning)")
    for name, figures in test.items():
        _print_scores(name, figures)
    _print_per_class(test)
    unclear = test["rules_and_model"]["unclear"]
    print(
        f"unclear (a language model would decide): {unclear['turns']} turns; {unclear['of_the_wrong']} of the "
        f"{unclear['wrong']} wrong decisions are among them.  decided by: {test['rules_and_model']['decided_by']}"
    )
    print(
        "escalate per language: "
        + ", ".join(f"{k} P {v['precision']:.2f} R {v['recall']:.2f}" for k, v in results["test_split_per_language"].items())
    )
    print("confusion, rules + model:")
    _print_confusion(results["confusion_test_split"])
    fixture = results["old_fixture"]
    print(f"\n== Old fixture ({fixture['rules']['lines']} lines; booking counts as question/other, thanks as other)")
    for name, figures in fixture.items():
        _print_scores(name, figures)
    _print_per_class(fixture)
    print("confusion, rules + model (booking and thanks as decided):")
    _print_confusion(results["confusion_old_fixture"])
    if "topic_holdout" in results:
        hold = results["topic_holdout"]
        print("\n== Topic hold-out: trained without the trade, scored on it")
        for name, figures in hold["pooled"].items():
            _print_scores(name, figures)
        for topic, runs in hold["per_topic"].items():
            esc = runs["all_lines"]["escalate"]
            alone, helped = runs["test_lines"]["accuracy"], runs["test_lines_with_examples"]["accuracy"]
            print(
                f"  {topic:<11} all lines: escalate P {esc['precision']:.2f} R {esc['recall']:.2f}, "
                f"accuracy {runs['all_lines']['accuracy']:.2f};  test lines accuracy {alone:.2f} -> {helped:.2f} with its client examples"
            )
    for name, t in results["timing"].items():
        print(
            f"\nCPU per message, {name.replace('_', ' ')}: mean {t['cpu_ms_mean']:.2f} ms, p95 {t['cpu_ms_p95']:.2f} ms "
            f"(wall mean {t['wall_ms_mean']:.2f} ms, p95 {t['wall_ms_p95']:.2f} ms)"
        )
