"""The process is assembled in one place: importing a module registers nothing, the bootstrap everything."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from app import bootstrap
from app.models import OutboxKind
from app.queue import Job, broker
from app.services.channels import outbox
from app.services.conversation.scheduling import Dispatcher

ROOT = Path(__file__).resolve().parent.parent

_REPORT = """
import importlib, json, logging, pkgutil, sys
import dramatiq.broker
import app
for module in pkgutil.walk_packages(app.__path__, "app."):
    if module.name not in ("app.worker", "app.cli", "app.cli_kb"):  # entry points: they act when run
        importlib.import_module(module.name)
if sys.argv[1] == "worker":
    importlib.import_module("app.worker")
from app.queue import broker
from app.services.channels import outbox
print(json.dumps({
    "global_broker": dramatiq.broker.global_broker is broker,
    "actors": sorted(broker.get_declared_actors()),
    "middleware": [type(m).__name__ for m in broker.middleware],
    "handlers": sorted(outbox._handlers),
    "listeners": len(outbox._gave_up_listeners),
    "log_handlers": [type(h).__name__ for h in logging.getLogger().handlers],
}))
"""


def _fresh_process(mode: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", _REPORT, mode], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    state: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return state


def test_importing_the_application_changes_no_global_state():
    state = _fresh_process("import")
    assert state["global_broker"] is False
    assert state["actors"] == [] and "Dispatcher" not in state["middleware"]
    assert state["handlers"] == [] and state["listeners"] == 0
    assert state["log_handlers"] == []


def test_the_worker_entry_wires_what_dramatiqs_cli_needs():
    state = _fresh_process("worker")
    assert state["global_broker"] is True  # `dramatiq app.worker` finds the broker globally
    assert state["actors"] == sorted(Job)
    assert state["middleware"].count("Dispatcher") == 1
    assert state["handlers"] == sorted(OutboxKind)
    assert state["listeners"] == 2  # the operator's alert, the manager's "not delivered"
    assert "ErrorCounter" in state["log_handlers"]


def test_wiring_twice_registers_nothing_twice():
    bootstrap.wire()
    bootstrap.wire()
    assert sum(isinstance(m, Dispatcher) for m in broker.middleware) == 1
    assert set(outbox._handlers) == set(OutboxKind)
    assert len(outbox._gave_up_listeners) == 2
