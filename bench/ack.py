"""`python -m bench.ack`: webhook acknowledgement throughput of the service against the floor, driven by wrk.

wrk (C, `apt-get install wrk`) drives 32 keep-alive connections with bench/wrk/webhook.lua: every request
a new customer, stamped now. The service runs at the README defaults (LOG_LEVEL=INFO, the in-process
worker running); its turns wait BUFFER_WAIT_SECONDS=3600, so none falls due while it is measured: the worker
is idle, as issue #13 asks, and what it costs under load is what it does meanwhile (polling, dispatching,
preparing queries ahead). The floor (bench/floor.py) and each service alternate in slices, so a drift of the
VM's speed weighs on all alike. `--compare NAME=PATH` adds the service of another checkout (before/after in
one run). See docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import procs
from bench import profile as profile_summary
from bench.run import CLIENT_SLUG, WEBHOOK_SECRET, Bench, log, parse

LUA = procs.ROOT / "bench" / "wrk" / "webhook.lua"
# The turns of the measured messages never fall due while the service is measured (the worker stays idle)
_IDLE_WORKER_ENV = {"BUFFER_WAIT_SECONDS": "3600", "BUFFER_MAX_WAIT_SECONDS": "3600"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=20.0, help="measured seconds per server, split into slices (default 20)")
    parser.add_argument("--slices", type=int, default=4, help="alternating slices per server (default 4)")
    parser.add_argument("--warmup-s", type=float, default=1.0, help="unmeasured wrk run before each slice (default 1)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1: it is C, one thread keeps up)")
    parser.add_argument("--log-level", default="INFO", help="LOG_LEVEL of the services (default INFO, the README's)")
    parser.add_argument(
        "--service-env", action="append", default=[], metavar="KEY=VALUE", help="extra env for every service (tuned: say so)"
    )
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=PATH", help="also measure the service of checkout PATH")
    parser.add_argument("--profile", action="store_true", help="py-spy record each service in its middle slice (--gil)")
    parser.add_argument("--out", type=Path, help="keep logs and profiles there")
    parser.add_argument("--json", action="store_true", help="results as JSON on stdout")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        log("wrk is not installed: apt-get install wrk")
        return 1
    base = ["--log-level", args.log_level]
    for item in args.service_env:
        base += ["--service-env", item]
    if args.out:
        base += ["--out", str(args.out)]
    opts = parse(base)
    services = {"service": opts.service_root}
    for item in args.compare:
        name, sep, path = item.partition("=")
        if not sep or not name or name in services or name == "floor":
            parser.error(f"--compare expects a new NAME=PATH, got {item!r}")
        services[name] = Path(path).resolve()
    bench = Bench(opts)
    try:
        results = _run(bench, args, services)
    except KeyboardInterrupt:
        return 130
    finally:
        bench.close()
        if not (args.out or args.profile):
            shutil.rmtree(bench.run_dir, ignore_errors=True)
    sys.stdout.write((json.dumps(results, ensure_ascii=False, indent=2) if args.json else _render(results)) + "\n")
    return 0


def _run(bench: Bench, args: argparse.Namespace, services: dict[str, Path]) -> dict[str, Any]:
    opts = bench.opts
    watch = procs.Contention("truffles_bench")
    time.sleep(2.0)
    results: dict[str, Any] = {
        "machine": procs.machine(),
        "load_before": _loadavg(),
        "others_before_pct": watch.result()["other_processes_cpu_pct"],
    }
    bench.start_fakes()
    log("preparing database truffles_bench and Redis DB 14")
    bench.prepare_database()
    bench.reset_state()
    (floor,) = bench.start(("floor", "bench.floor:app", bench.env()))
    results["roots"] = {name: str(root) for name, root in services.items()}
    runs: dict[str, list[dict[str, Any]]] = {"floor": [], **{name: [] for name in services}}
    slice_s = args.duration_s / args.slices
    tag = 0
    for i in range(args.slices):
        for name in runs:
            tag += 1
            # One service at a time next to the floor: each holds a webhook pool of HTTP_THREADS connections,
            # and two or three at once with the floor exceed PostgreSQL's default 100 (other users' included).
            if name == "floor":
                server = floor
            else:
                opts.service_root = services[name]  # Bench.start runs app.* from opts.service_root
                (server,) = bench.start((name, "app.main:app", bench.env(**_IDLE_WORKER_ENV, **opts.service_env)))
            profile = args.profile and name != "floor" and i == args.slices // 2
            runs[name].append(_slice(bench, server, args, seconds=slice_s, tag=tag, profile=profile, label=f"{name}-{i}"))
            if name != "floor":
                runs[name][-1]["memory"] = procs.memory_mb(server.pid)
                bench.stop(server)
            log(f"  slice {i + 1}/{args.slices} {name}: {runs[name][-1]['requests_per_s']} req/s ({runs[name][-1]['errors']} errors)")
    floor_rps = _merge(runs["floor"])["requests_per_s"] or 1.0
    results["servers"] = {}
    for name, slices in runs.items():
        merged = _merge(slices)
        merged["ratio_to_floor"] = round(merged["requests_per_s"] / floor_rps, 2)
        results["servers"][name] = merged
    bench.stop(floor)
    results["load_after"] = _loadavg()
    results["options"] = {
        "connections": args.connections,
        "wrk_threads": args.wrk_threads,
        "duration_s": args.duration_s,
        "slices": args.slices,
        "log_level": args.log_level,
        "service_env": {**_IDLE_WORKER_ENV, **opts.service_env},
    }
    results["service_log"] = _log_events(bench.run_dir)
    return results


def _slice(
    bench: Bench, server: procs.Server, args: argparse.Namespace, *, seconds: float, tag: int, profile: bool, label: str
) -> dict[str, Any]:
    url = f"{server.url}/webhook/{CLIENT_SLUG}?secret={WEBHOOK_SECRET}"
    _wrk(url, args, seconds=args.warmup_s, tag=900 + tag)
    profiler = (
        procs.Profiler(server.pid, bench.run_dir / f"profile-{label}", seconds=max(1.0, seconds - 0.5), rate=200) if profile else None
    )
    cpu0, watch = procs.cpu_seconds(server.pid), procs.Contention("truffles_bench")
    out = _wrk(url, args, seconds=seconds, tag=tag)
    cpu = procs.cpu_seconds(server.pid) - cpu0
    elapsed = out["duration_us"] / 1e6
    errors = sum(out[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    answered = out["requests"] - out["status_errors"]  # a fast error is no acknowledgement: only 2xx count
    result = {
        "requests": answered,
        "elapsed_s": elapsed,
        "requests_per_s": round(answered / elapsed, 1),
        "p50_ms": out["p50_ms"],
        "p99_ms": out["p99_ms"],
        "errors": errors,
        "server_cpu_s": cpu,
        "wrk_cpu_s": out["wrk_cpu_s"],
        **watch.result(),
    }
    if profiler is not None:
        files = profiler.finish()
        result["profile"] = str(files[0]) if files else None
    return result


def _wrk(url: str, args: argparse.Namespace, *, seconds: float, tag: int) -> dict[str, Any]:
    """One wrk run; its JSON summary (from the Lua done()) and its own CPU time."""
    duration = f"{max(1, round(seconds))}s"
    command = [
        "wrk",
        f"-t{args.wrk_threads}",
        f"-c{args.connections}",
        f"-d{duration}",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
        "--",
        str(tag),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = process.communicate(timeout=seconds + 30)
    except BaseException:
        process.kill()
        process.wait(timeout=5)
        raise
    usage = _child_cpu()
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(
            f"wrk failed ({process.returncode}): {err.decode(errors='replace')[-1000:]} {out.decode(errors='replace')[-1000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    result["wrk_cpu_s"] = usage
    return result


_children_cpu = 0.0


def _child_cpu() -> float:
    """CPU used by the wrk run that just ended (children's times, since the previous call)."""
    import os

    global _children_cpu
    times = os.times()
    total = times.children_user + times.children_system
    used, _children_cpu = total - _children_cpu, total
    return round(used, 3)


def _merge(slices: list[dict[str, Any]]) -> dict[str, Any]:
    requests = sum(s["requests"] for s in slices)
    elapsed = sum(s["elapsed_s"] for s in slices)
    cpu = sum(s["server_cpu_s"] for s in slices)
    merged: dict[str, Any] = {
        "requests_per_s": round(requests / elapsed, 1),
        "slices_req_per_s": [s["requests_per_s"] for s in slices],
        "p50_ms": round(max(s["p50_ms"] for s in slices), 2),
        "p99_ms": round(max(s["p99_ms"] for s in slices), 2),
        "errors": sum(s["errors"] for s in slices),
        "server_cpu_ms_per_request": round(1000 * cpu / max(1, requests), 3),
        "server_cpu_pct": round(100 * cpu / elapsed, 1),
        "wrk_cpu_pct": round(100 * sum(s["wrk_cpu_s"] for s in slices) / elapsed, 1),
        "others_pct": round(sum(s["other_processes_cpu_pct"] for s in slices) / len(slices), 1),
        "peak_rss_mb": max((s["memory"]["peak_rss_mb"] for s in slices if "memory" in s), default=None),
    }
    profiles = [s["profile"] for s in slices if s.get("profile")]
    if profiles:
        loaded = profile_summary.load(Path(profiles[0]))
        merged["profile"] = {
            "file": profiles[0],
            "samples": loaded.samples,
            "top_self": [(round(100 * n / loaded.samples, 1), f) for f, n in loaded.self_counts.most_common(25)],
            "top_total": [(round(100 * n / loaded.samples, 1), f) for f, n in loaded.total_counts.most_common(60)],
        }
    return merged


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()


def _log_events(run_dir: Path) -> dict[str, int]:
    events: dict[str, int] = {}
    for path in run_dir.glob("*.log"):
        if path.name.startswith("floor"):
            continue
        for line in path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            key = f"{path.stem} {record.get('level')} {record.get('event')}"
            events[key] = events.get(key, 0) + 1
    return dict(sorted(events.items(), key=lambda kv: -kv[1])[:20])


def _render(results: dict[str, Any]) -> str:
    o = results["options"]
    lines = [
        f"wrk -t{o['wrk_threads']} -c{o['connections']}, {o['slices']} alternating slices, {o['duration_s']:.0f} s per server; "
        f"LOG_LEVEL={o['log_level']}, service env {o['service_env']}",
        f"load average before {results['load_before']}, after {results['load_after']}; others before {results['others_before_pct']}%",
        "",
        "server            req/s  ratio  p50 ms  p99 ms  errors  CPU ms/req  server CPU%  wrk CPU%  others%  slices",
    ]
    for name, r in results["servers"].items():
        lines.append(
            f"  {name:<14} {r['requests_per_s']:>7}  {r['ratio_to_floor']:>5}  {r['p50_ms']:>6}  {r['p99_ms']:>6}  {r['errors']:>6}  "
            f"{r['server_cpu_ms_per_request']:>10}  {r['server_cpu_pct']:>11}  {r['wrk_cpu_pct']:>8}  {r['others_pct']:>7}  "
            f"{r['slices_req_per_s']}"
        )
    for name, r in results["servers"].items():
        prof = r.get("profile")
        if prof:
            lines += ["", f"profile of {name}: {prof['samples']} samples, {prof['file']}"]
            lines += [f"  self  {pct:5.1f}%  {frame}" for pct, frame in prof["top_self"][:15]]
    if results.get("service_log"):
        lines += ["", "log lines by event: " + ", ".join(f"{k} x{v}" for k, v in results["service_log"].items())]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
