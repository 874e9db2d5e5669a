"""Retrieval benchmark: quality on the «Жібек» fixture, threshold sweep, search latency at 5 000 chunks.

    python -m bench.retrieval_bench [--json] [--chunks 5000] [--embed-all] [--shape share|dominant|both] [--structured]

Also quality on a business's own structured file (fixtures/kb/structured/studio.yaml, loaded as it is:
FAQ items as Q&A, everything else as passages); `--structured` runs that part alone.

Runs offline on a temporary embedded Qdrant. The fixture is ingested through kb (real loaders,
chunking, embeddings). Filler chunks for other tenants (and this one) have real sparse vectors, but
their dense vectors are real embeddings of a sample of them, jittered: embedding 5 000 chunks takes
minutes on 2 cores, the time is extrapolated from the sample and reported (--embed-all embeds them all).

Two shapes of the 5 000 chunks: `share`, the fixture's tenant holds ~500 and three others ~1 500 each;
`dominant`, the fixture's tenant holds ~4 500 and the others share the rest. Quality is reported on the
fixture alone (tune and held-out apart) and again with the filler loaded.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from app.config import settings
from app.services.knowledge import embeddings, kb, qdrant

FIXTURE = Path(__file__).parent / "fixtures" / "kb"
CLIENT = "zhibek"
STRUCTURED = FIXTURE / "structured"
STRUCTURED_CLIENT = "aisulu"
OTHER_TENANTS = ("autoservice", "dental", "bakery")
_SAMPLE_EMBED = 160


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_questions() -> dict[str, Any]:
    """The labelled questions and off-topic questions of the fixture."""
    data: dict[str, Any] = yaml.safe_load((FIXTURE / "questions.yaml").read_text(encoding="utf-8"))
    return data


def _rank(hits: list[kb.KnowledgeHit], expect: list[str]) -> int | None:
    return next((index for index, hit in enumerate(hits) if hit.heading in expect), None)


def evaluate(threshold: float) -> dict[str, Any]:
    """hit@1 / hit@3 per split, off-topic rejection and a threshold sweep, on CLIENT's knowledge."""
    data = load_questions()
    rows = []
    for question in data["questions"]:
        hits = kb.search(client_id=CLIENT, query=question["q"], limit=3)
        rank = _rank(hits, question["expect"])
        rows.append({**question, "rank": rank, "top": hits[0].score if hits else 0.0, "foreign": _foreign(hits)})
    off = []
    for question in data["off_topic"]:
        hits = kb.search(client_id=CLIENT, query=question["q"], limit=3)
        off.append({**question, "top": hits[0].score if hits else 0.0, "heading": hits[0].heading if hits else ""})

    def summary(selected: list[dict[str, Any]]) -> dict[str, float]:
        return _summary(selected, threshold)

    def rejection(selected: list[dict[str, Any]]) -> float:
        return round(sum(row["top"] < threshold for row in selected) / (len(selected) or 1), 3)

    tune = [row for row in rows if row["split"] == "tune"]
    tune_off = [row for row in off if row["split"] == "tune"]
    strict = settings.kb_offline_min_score
    answered = [row for row in rows if row["top"] >= strict]
    confident = {
        "threshold": strict,
        "answered": round(len(answered) / len(rows), 3),
        "right": round(sum(row["rank"] == 0 for row in answered) / (len(answered) or 1), 3),
        "off_topic_answered": sum(row["top"] >= strict for row in off),
        "tune_sweep": [
            {
                "threshold": step / 100,
                "answered": round(sum(row["top"] >= step / 100 for row in tune) / len(tune), 3),
                "right": _share(
                    sum(row["rank"] == 0 and row["top"] >= step / 100 for row in tune),
                    sum(row["top"] >= step / 100 for row in tune),
                ),
                "off_answered": sum(row["top"] >= step / 100 for row in tune_off),
            }
            for step in range(80, 96)
        ],
    }
    sweep = []
    for step in range(75, 96):
        candidate = step / 100
        accepted = sum(row["top"] >= candidate for row in tune) / len(tune)
        rejected = sum(row["top"] < candidate for row in tune_off) / len(tune_off)
        sweep.append({"threshold": candidate, "tune_on_accepted": round(accepted, 3), "tune_off_rejected": round(rejected, 3)})
    return {
        "all": summary(rows),
        "tune": summary(tune),
        "heldout": summary([row for row in rows if row["split"] == "heldout"]),
        "kazakh": summary([row for row in rows if row["lang"] == "kk"]),
        "no_shared_words": summary([row for row in rows if row.get("nolex")]),
        "threshold": threshold,
        "off_topic_rejected": {
            "all": rejection(off),
            "tune": rejection(tune_off),
            "heldout": rejection([row for row in off if row["split"] == "heldout"]),
        },
        "on_topic_below_threshold": [row["q"] for row in rows if row["top"] < threshold],
        "off_topic_accepted": [row["q"] for row in off if row["top"] >= threshold],
        "misses@3": [row["q"] for row in rows if row["rank"] is None],
        "foreign_hits": sum(row["foreign"] for row in rows),
        "confident": confident,
        "sweep": sweep,
    }


def _summary(selected: list[dict[str, Any]], threshold: float) -> dict[str, float]:
    n = len(selected) or 1
    return {
        "n": len(selected),
        "hit@1": round(sum(row["rank"] == 0 for row in selected) / n, 3),
        "hit@3": round(sum(row["rank"] is not None for row in selected) / n, 3),
        # answered with the right chunk among what relevant() keeps
        "answered@3": round(sum(row["rank"] is not None and row["top"] >= threshold for row in selected) / n, 3),
    }


def evaluate_structured(threshold: float) -> dict[str, Any]:
    """hit@1 / hit@3 / answered@3 of the questions on the structured file, ingested as it is (kb.ingest_paths)."""
    report = kb.ingest_paths(client_id=STRUCTURED_CLIENT, paths=[STRUCTURED / "studio.yaml"])
    if report.failed:
        raise RuntimeError(f"the structured fixture did not load: {report.failed}")
    questions = yaml.safe_load((STRUCTURED / "questions.yaml").read_text(encoding="utf-8"))["questions"]
    rows = []
    for question in questions:
        hits = kb.search(client_id=STRUCTURED_CLIENT, query=question["q"], limit=3)
        rows.append({**question, "rank": _rank(hits, question["expect"]), "top": hits[0].score if hits else 0.0})

    return {
        "chunks": report.chunks,
        "threshold": threshold,
        "all": _summary(rows, threshold),
        "kazakh": _summary([row for row in rows if row["lang"] == "kk"], threshold),
        "misses@1": [row["q"] for row in rows if row["rank"] != 0],
        "below_threshold": [row["q"] for row in rows if row["top"] < threshold],
    }


def run_structured() -> dict[str, Any]:
    """The structured-file quality alone, in a temporary embedded Qdrant."""
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as folder:
        qdrant.configure(path=Path(folder))
        try:
            return {"embedder": embeddings.get_embedder().name, "structured": evaluate_structured(settings.kb_min_score)}
        finally:
            qdrant.configure(path=None)


def _print_structured(structured: dict[str, Any]) -> None:
    print(f"structured file (studio.yaml as it is, {structured['chunks']} chunks):")
    for name in ("all", "kazakh"):
        row = structured[name]
        print(f"  {name:16} n={row['n']:3}  hit@1={row['hit@1']:.3f}  hit@3={row['hit@3']:.3f}  answered@3={row['answered@3']:.3f}")
    print(f"  misses@1: {structured['misses@1']}")
    print(f"  below kb_min_score={structured['threshold']}: {structured['below_threshold']}")


def _share(part: int, whole: int) -> float:
    return round(part / (whole or 1), 3)


def _foreign(hits: list[kb.KnowledgeHit]) -> int:
    # Filler of other tenants is the only foreign text in the collection; none may ever show up.
    return sum(hit.source.startswith("filler-") and hit.source != f"filler-{CLIENT}.md" for hit in hits)


# --- filler ---------------------------------------------------------------------------------------

_TOPICS = {
    "autoservice": ["Замена масла", "Шиномонтаж", "Диагностика двигателя", "Ремонт тормозов", "Кузовной ремонт"],
    "dental": ["Лечение кариеса", "Чистка зубов", "Имплантация", "Брекеты", "Удаление зуба"],
    "bakery": ["Торты на заказ", "Хлеб и выпечка", "Кофе с собой", "Кейтеринг", "Оптовые поставки"],
    CLIENT: ["Архив новостей салона", "Блог о трендах", "Отзывы клиентов", "История бренда", "Партнёры"],
}
_PHRASES = [
    "Работаем с {n} года, за это время обслужили более {m} клиентов в Алматы и Астане.",
    "Стоимость зависит от объёма работ и начинается от {m} тенге, точную цену назовёт специалист.",
    "Запись по телефону или в мессенджере, подтверждение приходит в течение {n} минут.",
    "В {place} открылся новый филиал, он работает ежедневно с {n}:00.",
    "Гарантия на работы составляет {n} месяцев, сохраняйте чек до окончания срока.",
    "Материалы закупаются у официальных поставщиков из {place}, на каждую партию есть сертификаты.",
    "Постоянные клиенты получают бонусы: {n}% от суммы возвращается на карту.",
    "Специалист {name} проведёт консультацию и составит план, первичный приём стоит {m} тенге.",
    "По выходным действует предварительная запись, в праздники график меняется.",
    "Оплатить можно наличными, картой или через приложение банка, для компаний выставляем счёт.",
]
_PLACES = ["Алматы", "Астаны", "Шымкента", "Караганды", "Турции", "Кореи", "Германии", "Италии"]
_NAMES = ["Ерлан", "Айдана", "Марат", "Светлана", "Нурлан", "Гульнара", "Данияр", "Оксана"]


def filler_texts(count: int, tenant: str, rng: random.Random) -> list[tuple[str, str]]:
    """(heading, text) pairs of plausible business text on the tenant's topics."""
    chunks = []
    for index in range(count):
        heading = f"{rng.choice(_TOPICS[tenant])} > Раздел {index}"
        sentences = [
            rng.choice(_PHRASES).format(
                n=rng.randint(2, 2020), m=rng.randint(1, 90) * 1000, place=rng.choice(_PLACES), name=rng.choice(_NAMES)
            )
            for _ in range(rng.randint(3, 6))
        ]
        chunks.append((heading, f"{heading}\n" + " ".join(sentences)))
    return chunks


def load_filler(total: int, *, own: int, embed_all: bool, seed: int = 7) -> dict[str, Any]:
    """Add `total` filler points: `own` for CLIENT, the rest split over the other tenants."""
    rng = random.Random(seed)
    embedder = embeddings.get_embedder()
    own = min(own, total)
    others = (total - own) // len(OTHER_TENANTS)
    tenants = [*OTHER_TENANTS, CLIENT]
    texts = {tenant: filler_texts(own if tenant == CLIENT else others, tenant, rng) for tenant in tenants}
    flat = [(tenant, heading, text) for tenant in tenants for heading, text in texts[tenant]]

    started = time.perf_counter()
    sample = [text for _, _, text in flat[:: max(1, len(flat) // _SAMPLE_EMBED)]][:_SAMPLE_EMBED]
    sample_vectors = np.array(embedder.embed_documents(sample))
    per_text = (time.perf_counter() - started) / len(sample)
    started = time.perf_counter()
    heading_sample = np.array([embedder.embed_query(heading) for _, heading, _ in flat[:40]])
    per_heading = (time.perf_counter() - started) / len(heading_sample)
    line_texts = [kb.chunk_lines(kb.Chunk(index=0, heading=heading, text=text)) for _, heading, text in flat]
    started = time.perf_counter()
    line_sample = np.array(embedder.embed_documents([line for lines in line_texts[:: max(1, len(flat) // 40)][:40] for line in lines]))
    per_line = (time.perf_counter() - started) / len(line_sample)

    line_counts = [len(lines) for lines in line_texts]
    if embed_all:
        started = time.perf_counter()
        dense = np.array(embedder.embed_documents([text for _, _, text in flat]))
        headings = np.array(embedder.embed_queries([heading for _, heading, _ in flat]))
        all_lines = np.array(embedder.embed_documents([line for lines in line_texts for line in lines]))
        embed_seconds = time.perf_counter() - started
    else:
        noise = np.random.default_rng(seed)

        def jitter(base: np.ndarray, count: int) -> np.ndarray:
            rows = base[noise.integers(0, len(base), count)] + noise.normal(0, 0.02, (count, base.shape[1]))
            return rows / np.linalg.norm(rows, axis=1, keepdims=True)

        dense, headings = jitter(sample_vectors, len(flat)), jitter(heading_sample, len(flat))
        all_lines = jitter(line_sample, sum(line_counts))
        embed_seconds = None
    line_starts = np.cumsum([0, *line_counts])

    started = time.perf_counter()
    sparse = [embeddings.sparse_document(text) for _, _, text in flat]
    sparse_seconds = time.perf_counter() - started

    points = [
        qdrant.ChunkPoint(
            id=kb.chunk_id(client_id=tenant, source=f"filler-{tenant}.md", index=index),
            dense=dense[index].tolist(),
            heading=headings[index].tolist(),
            lines=all_lines[line_starts[index] : line_starts[index + 1]].tolist(),
            sparse=sparse[index],
            payload={
                "client_id": tenant,
                "source": f"filler-{tenant}.md",
                "heading": heading,
                "text": text,
                "terms": sorted(set(embeddings.tokenize(text))),
                "chunk_index": index,
                "updated_at": "2026-01-01T00:00:00+00:00",
            },
        )
        for index, (tenant, heading, text) in enumerate(flat)
    ]
    started = time.perf_counter()
    for tenant in tenants:
        _, collection = kb._ready(tenant)
        qdrant.upsert(collection=collection, points=[point for point in points if point.payload["client_id"] == tenant])
    upsert_seconds = time.perf_counter() - started
    return {
        "filler_points": len(points),
        "points_per_tenant": {tenant: len(texts[tenant]) for tenant in tenants},
        "sample_embedded": len(sample) + len(heading_sample),
        "embed_seconds_per_text": round(per_text, 4),
        "embed_seconds_per_heading": round(per_heading, 4),
        "embed_seconds_per_line": round(per_line, 4),
        "lines_per_chunk": round(sum(line_counts) / len(line_counts), 1),
        "embed_all_seconds_estimated": round((per_text + per_heading) * len(points) + per_line * sum(line_counts), 1),
        "embed_all_seconds_measured": None if embed_seconds is None else round(embed_seconds, 1),
        "sparse_seconds": round(sparse_seconds, 2),
        "upsert_seconds": round(upsert_seconds, 2),
    }


def latency(rounds: int, tenant: str = CLIENT) -> dict[str, Any]:
    """Median and p95 of kb.search end to end, of the store query alone and of the query
    embedding, for a tenant; plus the one-off cost of building its in-process index."""
    data = load_questions()
    queries = [question["q"] for question in data["questions"] + data["off_topic"]]
    embedder, collection = kb._ready(tenant)
    qdrant._forget_indexes()
    started = time.perf_counter()
    kb.search(client_id=tenant, query="прогрев индекса", limit=5)
    first_search_ms = (time.perf_counter() - started) * 1000
    end_to_end, store_only, embed_only = [], [], []
    for _ in range(rounds):
        for query in queries:
            kb._query_cache.clear()  # a turn's query is embedded once: time that, not a cache hit
            started = time.perf_counter()
            kb.search(client_id=tenant, query=query, limit=5)
            end_to_end.append((time.perf_counter() - started) * 1000)
    vectors = []
    for query in queries:
        started = time.perf_counter()
        vectors.append((embedder.embed_query(query), embeddings.sparse_query(query)))
        embed_only.append((time.perf_counter() - started) * 1000)
    for _ in range(rounds):
        for dense, sparse in vectors:
            started = time.perf_counter()
            qdrant.hybrid_search(
                collection=collection,
                client_id=tenant,
                dense=dense,
                sparse=sparse,
                limit=kb._MIN_CANDIDATES,
                prefetch_limit=kb._MIN_PREFETCH,
            )
            store_only.append((time.perf_counter() - started) * 1000)

    def stats(samples: list[float]) -> dict[str, float]:
        ordered = sorted(samples)
        return {
            "n": len(ordered),
            "median_ms": round(statistics.median(ordered), 1),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1], 1),
        }

    return {
        "tenant": tenant,
        "first_search_ms": round(first_search_ms, 1),
        "search": stats(end_to_end),
        "store_query": stats(store_only),
        "query_embedding": stats(embed_only),
    }


def run(*, chunks: int, own: int, embed_all: bool, rounds: int, quality: bool = True) -> dict[str, Any]:
    """The whole benchmark in a temporary embedded Qdrant; returns the results."""
    results: dict[str, Any] = {"embedder": None, "own": own}
    with tempfile.TemporaryDirectory(prefix="kb-bench-") as folder:
        qdrant.configure(path=Path(folder))
        try:
            rss_before = _rss_mb()
            started = time.perf_counter()
            embedder = embeddings.get_embedder()
            results["embedder"] = {
                "name": embedder.name,
                "dim": embedder.dim,
                "load_seconds": round(time.perf_counter() - started, 2),
                "rss_mb_before": round(rss_before, 1),
                "rss_mb_after_load": round(_rss_mb(), 1),
            }
            embedder.embed_documents(["Прогрев: модель читает свои веса при первом вызове."] * 8)
            results["embedder"]["rss_mb_after_first_use"] = round(_rss_mb(), 1)
            started = time.perf_counter()
            report = kb.ingest_paths(client_id=CLIENT, paths=[FIXTURE / "salon.md", FIXTURE / "faq.yaml"])
            results["ingest"] = {"chunks": report.chunks, "seconds": round(time.perf_counter() - started, 2)}
            if quality:
                results["quality"] = evaluate(settings.kb_min_score)
                results["structured"] = evaluate_structured(settings.kb_min_score)
            results["load"] = load_filler(chunks - report.chunks, own=own, embed_all=embed_all)
            results["rss_mb_loaded"] = round(_rss_mb(), 1)
            if quality:
                results["quality_under_load"] = {key: value for key, value in evaluate(settings.kb_min_score).items() if key != "sweep"}
            results["latency"] = latency(rounds)
            results["latency_other_tenant"] = latency(1, OTHER_TENANTS[0])
            results["rss_mb_end"] = round(_rss_mb(), 1)
        finally:
            qdrant.configure(path=None)
    return results


def _print_quality(quality: dict[str, Any]) -> None:
    for name in ("all", "tune", "heldout", "kazakh", "no_shared_words"):
        row = quality[name]
        print(f"  {name:16} n={row['n']:3}  hit@1={row['hit@1']:.3f}  hit@3={row['hit@3']:.3f}  answered@3={row['answered@3']:.3f}")
    off = quality["off_topic_rejected"]
    print(f"  kb_min_score={quality['threshold']}: off-topic rejected all={off['all']} tune={off['tune']} heldout={off['heldout']}")
    print(f"  on-topic below threshold: {quality['on_topic_below_threshold']}")
    print(f"  off-topic accepted: {quality['off_topic_accepted']}")
    print(f"  misses@3: {quality['misses@3']}  foreign hits: {quality['foreign_hits']}")
    confident = quality["confident"]
    print(
        f"  best_passage (kb_offline_min_score={confident['threshold']}): answers {confident['answered']} of on-topic, "
        f"right {confident['right']} of those; off-topic answered {confident['off_topic_answered']}"
    )


def _print(results: dict[str, Any]) -> None:
    emb, load = results["embedder"], results["load"]
    print(f"== shape: fixture tenant owns {results['own'] + results['ingest']['chunks']} chunks ==")
    print(
        f"embedder {emb['name']} dim={emb['dim']} load={emb['load_seconds']}s; rss before {emb['rss_mb_before']} MB, "
        f"after load {emb['rss_mb_after_load']} MB, after first use {emb['rss_mb_after_first_use']} MB"
    )
    print(f"fixture: {results['ingest']['chunks']} chunks ingested in {results['ingest']['seconds']}s")
    if "quality" in results:
        print("quality on the fixture alone:")
        _print_quality(results["quality"])
        sweep = results["quality"]["sweep"]
        print(
            "  sweep (tune split, on accepted/off rejected): "
            + "  ".join(f"{row['threshold']:.2f}:{row['tune_on_accepted']:.2f}/{row['tune_off_rejected']:.2f}" for row in sweep)
        )
        _print_structured(results["structured"])
        print(f"quality with {load['filler_points']} filler points loaded:")
        _print_quality(results["quality_under_load"])
    print(
        f"filler: {load['lines_per_chunk']} lines/chunk; embedding {load['embed_seconds_per_text'] * 1000:.0f} ms/text + "
        f"{load['embed_seconds_per_heading'] * 1000:.0f} ms/heading + {load['embed_seconds_per_line'] * 1000:.0f} ms/line"
        f" -> ~{load['embed_all_seconds_estimated']}s for all filler (measured: {load['embed_all_seconds_measured']}); "
        f"sparse {load['sparse_seconds']}s, upsert {load['upsert_seconds']}s"
    )
    sizes = load["points_per_tenant"]
    total = load["filler_points"] + results["ingest"]["chunks"]
    for tenant_lat in (results["latency"], results["latency_other_tenant"]):
        tenant = tenant_lat["tenant"]
        own = sizes[tenant] + (results["ingest"]["chunks"] if tenant == CLIENT else 0)
        print(
            f"latency for {tenant} ({own} own chunks of {total}): search median={tenant_lat['search']['median_ms']} ms "
            f"p95={tenant_lat['search']['p95_ms']} ms (n={tenant_lat['search']['n']}); store query median="
            f"{tenant_lat['store_query']['median_ms']} ms p95={tenant_lat['store_query']['p95_ms']} ms; query embedding "
            f"median={tenant_lat['query_embedding']['median_ms']} ms; first search (builds the index) "
            f"{tenant_lat['first_search_ms']} ms"
        )
    print(f"rss with everything loaded: {results['rss_mb_loaded']} MB, at end: {results['rss_mb_end']} MB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--chunks", type=int, default=5000, help="points in the store for the latency run")
    parser.add_argument("--shape", choices=("share", "dominant", "both"), default="both", help="how the chunks are spread over tenants")
    parser.add_argument("--embed-all", action="store_true", help="embed every filler chunk instead of a sample")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the questions for latency")
    parser.add_argument("--structured", action="store_true", help="only the quality on the structured file")
    args = parser.parse_args(argv)
    if args.structured:
        structured = run_structured()
        if args.json:
            print(json.dumps(structured, ensure_ascii=False, indent=2))
        else:
            print(f"embedder {structured['embedder']}")
            _print_structured(structured["structured"])
        return 0
    shapes = {"share": (479, True), "dominant": (args.chunks - 521, False)}
    runs = [
        run(chunks=args.chunks, own=own, embed_all=args.embed_all, rounds=args.rounds, quality=quality)
        for name, (own, quality) in shapes.items()
        if args.shape in (name, "both")
    ]
    if args.json:
        print(json.dumps(runs, ensure_ascii=False, indent=2))
    else:
        for results in runs:
            _print(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
