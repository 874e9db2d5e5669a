"""Processes the benchmark starts (uvicorn, the load generator, py-spy) and what /proc says about them."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """An unused loopback port (the tiny race with another process binding it is acceptable here)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14 and 15 of stat)


def memory_mb(pid: int) -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of one process, in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return {"rss_mb": round(out.get("VmRSS", 0.0), 1), "peak_rss_mb": round(out.get("VmHWM", 0.0), 1)}


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, to tell how saturated the cores were."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


def _process_table() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command line, CPU seconds) of every process we may read."""
    table: dict[int, tuple[int, str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()[:300].replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        table[int(entry.name)] = (int(fields[1]), cmdline, (int(fields[11]) + int(fields[12])) / _CLK_TCK)
    return table


class Contention:
    """How busy the machine was during a measurement, and how much of that was processes that are not the bench's.

    "Other" is a lower bound: processes of other people (a test suite, a build) and PostgreSQL backends of
    other databases, counted while they live; the benchmark's own processes, its database's backends, the
    shared PostgreSQL background processes and Redis are not "other".
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self.machine0 = machine_cpu()
        self.table0 = _process_table()
        self.started = time.monotonic()

    def _other(self, pid: int, table: dict[int, tuple[int, str, float]]) -> bool:
        me, seen = os.getpid(), set()
        cursor = pid
        while cursor in table and cursor not in seen:  # a descendant of this driver is ours
            if cursor == me:
                return False
            seen.add(cursor)
            cursor = table[cursor][0]
        cmdline = table[pid][1]
        if cmdline.startswith("postgres: "):
            return " postgres " in cmdline and f" {self.database} " not in cmdline  # backends of other databases
        return "redis-server 127.0.0.1:6379" not in cmdline and pid != 1

    def result(self) -> dict[str, float]:
        table = _process_table()
        busy, total = machine_cpu()[0] - self.machine0[0], machine_cpu()[1] - self.machine0[1]
        other = 0.0
        for pid, (_, _, cpu) in table.items():
            if self._other(pid, table):
                before = self.table0.get(pid)
                other += cpu - (before[2] if before and before[1] == table[pid][1] else 0.0)
        cores = os.cpu_count() or 1
        elapsed = max(1e-6, time.monotonic() - self.started)
        return {
            "machine_cpu_pct": round(100 * busy / total, 1) if total else 0.0,
            "other_processes_cpu_pct": round(100 * other / (elapsed * cores), 1),
        }


class CpuBreakdown:
    """CPU seconds spent during a measurement, by process group: where the machine's time per turn goes.

    service: the uvicorn process; postgres: backends of the bench database; postgres (shared): the server's
    background processes (WAL writer, checkpointer... shared with anyone else's databases); redis: the
    server on 6379; driver: this process (the fakes' handler threads included: `fakes` takes them from it
    with their own counters); load generator: reported by itself; kernel: kernel threads; other: everything
    else on the machine. machine_busy also counts interrupt time no process is charged with.
    Processes that exit during the window lose their last CPU (a bench database backend closed by a pool).
    """

    def __init__(self, database: str, service_pid: int) -> None:
        self.database = database
        self.service_pid = service_pid
        self.table0 = _process_table()
        self.machine0 = machine_cpu()

    def _group(self, pid: int, parent: int, cmdline: str) -> str:
        if pid == self.service_pid:
            return "service"
        if pid == os.getpid():
            return "driver"
        if cmdline.startswith("postgres: "):
            if f" {self.database} " in cmdline:
                return "postgres"
            return "postgres_shared" if " postgres " not in cmdline else "other"
        if cmdline.startswith(("postgres ", "/usr/lib/postgresql")):
            return "postgres_shared"
        if "redis-server 127.0.0.1:6379" in cmdline:
            return "redis"
        if "-m bench.load" in cmdline:
            return "load_generator"
        if parent == 2 or not cmdline:  # kernel threads: loopback networking in softirq, writeback
            return "kernel"
        return "other"

    def result(self) -> dict[str, float]:
        """Seconds per group since construction, and the machine's busy seconds (all cores) in the same window."""
        table = _process_table()
        out: dict[str, float] = {}
        for pid, (parent, cmdline, cpu) in table.items():
            before = self.table0.get(pid)
            delta = cpu - (before[2] if before and before[1] == cmdline else 0.0)
            group = self._group(pid, parent, cmdline)
            out[group] = out.get(group, 0.0) + delta
        busy = machine_cpu()[0] - self.machine0[0]
        out["machine_busy"] = busy / _CLK_TCK
        return out


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")), "?")
    mem_kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


@dataclass
class Server:
    """A uvicorn subprocess in its own session (Ctrl-C in the terminal reaches only the driver, which stops it)."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    terminating: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, *, path: str = "/health", timeout: float = 90.0) -> None:
        """Until the server answers `path` (any status below 500); stops it and raises if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} on start; see {self.log_path}")
            with contextlib.suppress(OSError), urllib.request.urlopen(self.url + path, timeout=2) as response:
                if response.status < 500:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {path} within {timeout:.0f}s; see {self.log_path}")

    def terminate(self) -> None:
        """Ask the server to shut down (one SIGTERM: a second one makes uvicorn skip the graceful shutdown)."""
        if self.process.poll() is None and not self.terminating:
            self.process.send_signal(signal.SIGTERM)
            self.terminating = True

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (graceful: uvicorn runs the lifespan shutdown), SIGKILL after `timeout`."""
        if self.process.poll() is not None:
            return
        self.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def start_uvicorn(name: str, app: str, env: dict[str, str], log_dir: Path, *, root: Path = ROOT) -> Server:
    """Start `uvicorn APP --loop uvloop --http httptools` from `root` on a free loopback port (see Server.wait_ready)."""
    port = free_port()
    log_path = log_dir / f"{name}.log"
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]
    command += ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, cwd=root, env={**env, "PYTHONPATH": str(root)}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Server(name, port, process, log_path)


def run_load(job: dict[str, Any], *, timeout: float) -> dict[str, Any]:
    """Run the load generator process on one job and return its result."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.load"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(json.dumps(job).encode(), timeout=timeout)
    except BaseException:
        process.kill()
        process.wait(timeout=5)
        raise
    if process.returncode != 0:
        raise RuntimeError(f"load generator failed ({process.returncode}): {err.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(out)
    return result


class Profiler:
    """py-spy record on a running process for a fixed time, if py-spy is installed (pip install py-spy)."""

    def __init__(self, pid: int, out_base: Path, *, seconds: float, rate: int = 100, gil: bool = True) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.outputs: list[Path] = []
        binary = shutil.which("py-spy") or (
            str(Path(sys.executable).parent / "py-spy") if (Path(sys.executable).parent / "py-spy").exists() else None
        )
        if binary is None:
            return
        raw = out_base.with_suffix(".txt")
        self.outputs = [raw]
        # --format raw: collapsed stacks, one "frame;frame;... count" per line (bench.profile summarises them).
        # --gil: only the thread holding the GIL is sampled: where the one core of Python goes (the webhook path).
        # Without it, every thread on a CPU is sampled, native code that released the GIL included (the turn's
        # query embedding). --nonblocking: the service is not paused to be sampled.
        self.process = subprocess.Popen(
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, int(seconds))),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--output",
                str(raw),
                "--nonblocking",
                *(["--gil"] if gil else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )

    def finish(self, timeout: float = 60.0) -> list[Path]:
        """Wait for the recording to be written; returns the files that exist."""
        if self.process is None:
            return []
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=5)
        return [p for p in self.outputs if p.exists()]
