"""The import rules of docs/architecture.md, checked: routers -> services -> models, nothing pointing back up,
and the service packages in their order."""

import ast
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"

# The shared plumbing any part may use.
INFRA = {"config", "db", "redis_client", "queue", "metrics", "utils", "leases", "slots"}
# Which part may import which (besides itself and INFRA); a part is a top-level module or package of app/,
# a service package (services.<name>) or a shared service module (services.clients, services.replies).
MAY_IMPORT: dict[str, set[str]] = {
    "models": set(),
    "schemas": {"models"},
    "services.clients": {"models", "schemas"},
    "services.replies": set(),
    "services.hours": {"schemas"},
    "services.knowledge": {"models", "schemas"},
    "services.channels": {"models", "schemas"},
    "services.handover": {"models", "schemas", "services.clients", "services.replies", "services.hours", "services.channels"},
    "services.booking": {"models", "schemas", "services.clients", "services.hours", "services.channels", "services.handover"},
    "services.operations": {"models", "schemas", "services.channels", "services.knowledge", "services.handover"},
    "services.conversation": {
        "models",
        "schemas",
        "services.clients",
        "services.replies",
        "services.hours",
        "services.channels",
        "services.knowledge",
        "services.handover",
        "services.booking",
        "services.operations",  # the turn reports its response time to the alerts
        "intents",  # the turn's intent: rules and the learned classifier
    },
    # The intent rules, the learned classifier and a client's examples; reads the knowledge search's query vector.
    "intents": {"models", "services.knowledge"},
    "dependencies": {"schemas", "services.clients"},
    "middleware": {"services.conversation"},
    "routers": {"models", "schemas", "dependencies", "services.*"},
    "bootstrap": {"schemas", "services.*"},
    "main": {"bootstrap", "middleware", "routers", "services.knowledge"},
    "worker": {"bootstrap"},
    "cli": {"models", "schemas", "cli_kb", "cli_demo", "intents", "services.*"},
    "cli_demo": {"models", "cli_kb", "services.*"},
    "cli_kb": {"models", "services.*"},
}
for infra in INFRA:
    MAY_IMPORT[infra] = {"models"} if infra == "metrics" else set()


def _part(module: str) -> str:
    names = module.split(".")[1:]  # without "app"
    if names[:1] == ["services"] and len(names) > 1:
        return "services." + names[1]
    return names[0] if names else ""


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "app":
            base = node.module
            found |= {f"{base}.{alias.name}" if base in ("app", "app.services") else base for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "app"}
    return found


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(APP.rglob("*.py")):
        module = ".".join(path.relative_to(APP.parent).with_suffix("").parts).removesuffix(".__init__")
        if module not in ("app", "app.services"):  # the packages' empty __init__ files
            modules[module] = path
    return modules


def test_every_import_follows_the_layering():
    broken = []
    for module, path in _modules().items():
        part = _part(module)
        allowed = MAY_IMPORT[part] | INFRA | {part}
        for imported in _imports(path):
            target = _part(imported)
            if target not in allowed and not ("services.*" in allowed and target.startswith("services.")):
                broken.append(f"{module} imports {imported} ({part} -> {target})")
    assert broken == []


def test_the_rules_cover_every_part_of_the_application():
    assert {_part(module) for module in _modules()} <= set(MAY_IMPORT)
