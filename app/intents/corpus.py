"""The labelled corpus (corpus/*.jsonl, one file per label): loading, checking, and the fixed test split.

python -m app.intents.corpus            # check it and print its size per label and language
python -m app.intents.corpus --assign   # draw the split of lines that have none (existing ones never move)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from app.intents.labels import INTENTS, Intent, Lang, Split, Topic
from app.intents.rules import normalise

CORPUS_DIR = Path(__file__).parent / "corpus"
TEST_SHARE = 0.2
SPLIT_SEED = "truffles-intents-2025"
MIN_LINES = 1500
# The rules' old fixture stays an independent check: nothing of it may be copied here.
OLD_FIXTURE = Path(__file__).parents[2] / "bench" / "fixtures" / "intents.jsonl"


@dataclass(frozen=True)
class Example:
    text: str
    label: Intent
    lang: Lang
    topic: Topic
    split: Split | None = None


def load(directory: Path = CORPUS_DIR) -> list[Example]:
    """Every labelled line, file by file in label order."""
    examples: list[Example] = []
    for path in sorted(directory.glob("*.jsonl")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                split = row.get("split")
                examples.append(
                    Example(row["text"], Intent(row["label"]), Lang(row["lang"]), Topic(row["topic"]), Split(split) if split else None)
                )
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{path.name}:{number}: {exc}") from exc
    return examples


def save(examples: Iterable[Example], directory: Path = CORPUS_DIR) -> None:
    """Write the corpus back, one file per label, lines in their given order."""
    by_label: dict[Intent, list[Example]] = defaultdict(list)
    for example in examples:
        by_label[example.label].append(example)
    directory.mkdir(parents=True, exist_ok=True)
    for label, rows in by_label.items():
        lines = (json.dumps(asdict(row), ensure_ascii=False) for row in rows)
        (directory / f"{label}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def key(text: str) -> str:
    """What makes two texts the same line: case, punctuation, emoji, Latin letters and Kazakh look-alikes aside."""
    return normalise(text) or text.strip()


def fingerprint(examples: Iterable[Example]) -> str:
    """A short hash of the texts and labels, so a model file can say which corpus it was trained on."""
    digest = hashlib.blake2b(digest_size=8)
    for example in sorted(examples, key=lambda e: (e.text, e.label)):
        digest.update(f"{example.text}\0{example.label}\n".encode())
    return digest.hexdigest()


def _rank(text: str) -> bytes:
    return hashlib.blake2b(f"{SPLIT_SEED}\0{text}".encode(), digest_size=8).digest()


def assign_splits(examples: Sequence[Example]) -> list[Example]:
    """Lines without a split get one: within each label and language, the lowest-hashing 20% go to test."""
    strata: dict[tuple[Intent, Lang], list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        if example.split is None:
            strata[(example.label, example.lang)].append(index)
    result = list(examples)
    for indices in strata.values():
        ordered = sorted(indices, key=lambda i: _rank(examples[i].text))
        test_count = round(len(ordered) * TEST_SHARE)
        for position, index in enumerate(ordered):
            result[index] = replace(examples[index], split=Split.TEST if position < test_count else Split.TRAIN)
    return result


def problems(examples: Sequence[Example], *, not_in: Iterable[str] = ()) -> list[str]:
    """What is wrong with the corpus: duplicates, missing splits, a class or language absent from test, too few lines."""
    found: list[str] = []
    seen: dict[str, Example] = {}
    for example in examples:
        k = key(example.text)
        if k in seen:
            found.append(f"duplicate: {example.text!r} ({example.label}) and {seen[k].text!r} ({seen[k].label})")
        seen[k] = example
        if example.split is None:
            found.append(f"no split: {example.text!r}")
    outside = {key(text) for text in not_in}
    found.extend(f"also in the old fixture: {e.text!r}" for e in examples if key(e.text) in outside)
    if len(examples) < MIN_LINES:
        found.append(f"only {len(examples)} lines, at least {MIN_LINES} wanted")
    test = [e for e in examples if e.split == Split.TEST]
    found.extend(f"no {label} line in the test split" for label in INTENTS if not any(e.label == label for e in test))
    found.extend(f"no {lang} line in the test split" for lang in Lang if not any(e.lang == lang for e in test))
    return found


def fixture_texts(path: Path = OLD_FIXTURE) -> list[str]:
    """The texts of the old fixture (none when it is not there, as in a deployed image)."""
    if not path.exists():
        return []
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def table(examples: Sequence[Example]) -> str:
    """Lines per label and language, with the test split's share."""
    counts = Counter((e.label, e.lang) for e in examples)
    tests = Counter(e.label for e in examples if e.split == Split.TEST)
    header = f"{'label':<14}" + "".join(f"{lang:>9}" for lang in Lang) + f"{'total':>8}{'test':>6}"
    rows = [header]
    for label in INTENTS:
        cells = [counts[(label, lang)] for lang in Lang]
        rows.append(f"{label:<14}" + "".join(f"{c:>9}" for c in cells) + f"{sum(cells):>8}{tests[label]:>6}")
    totals = [sum(counts[(label, lang)] for label in INTENTS) for lang in Lang]
    rows.append(f"{'total':<14}" + "".join(f"{c:>9}" for c in totals) + f"{len(examples):>8}{sum(tests.values()):>6}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the intent corpus; --assign draws the split of new lines.")
    parser.add_argument("--assign", action="store_true", help="give lines without a split one (existing splits never move)")
    args = parser.parse_args(argv)
    examples = load()
    if args.assign:
        examples = assign_splits(examples)
        save(examples)
    print(table(examples))
    found = problems(examples, not_in=fixture_texts())
    for problem in found:
        print(problem)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
