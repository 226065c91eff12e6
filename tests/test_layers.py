"""The dependency direction stays one way: pure → store → domain → adapters → app."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).parent.parent / "src" / "minifaktory"

LAYERS = {
    "pure": [
        "errors",
        "clock",
        "protocol",
        "payloads",
        "jobs",
        "options",
        "throttles",
        "limits",
        "cron",
        "config",
        "tls",
        "metrics",
    ],
    "store": ["store", "store.db", "store.schema", "store.store", "store.reader"],
    "domain": [
        "batches",
        "syncer",
        "shutdown",
        "state",
        "maintenance",
        "broker",
        "notify",
        "workers",
        "governance",
        "loops",
    ],
    "adapters": [
        "commands",
        "server",
        "webui",
        "webui.app",
        "webui.security",
        "webui.port",
        "webui.server",
        "webui.openapi",
        "webui.views",
        "webui.prometheus",
        "client",
        "worker",
        "statsd",
    ],
    "app": [
        "app",
        "cli",
        "testing",
        "__init__",
        "__main__",
        "tools",
        "tools.health",
        "tools.backup",
        "tools.restore",
        "tools.admin",
        "tools.migrate",
        "tools.worker",
    ],
}
ORDER = list(LAYERS)
LAYER_OF = {mod: layer for layer, mods in LAYERS.items() for mod in mods}
IO_MODULES = {"asyncio", "anyio", "apsw", "socket", "uvloop"}
WEB_MODULES = {"starlette", "jinja2", "uvicorn", "multipart", "httpx"}
#: prometheus_client belongs to the module that renders /metrics, and to no other.
PROMETHEUS_MODULE = "webui.prometheus"
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE FROM|CREATE TABLE)\b")


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out.append((name.removesuffix(".__init__") if name != "__init__" else name, path))
    return out


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize(("name", "path"), modules(), ids=[n for n, _ in modules()])
def test_layering(name: str, path: Path) -> None:
    assert name in LAYER_OF, f"{name} belongs to no layer: add it to LAYERS"
    layer = ORDER.index(LAYER_OF[name])
    for imported in imports(path):
        if not imported.startswith("minifaktory."):
            top = imported.split(".")[0]
            if top == "apsw":
                assert LAYER_OF[name] == "store", f"{name} imports apsw"
            if LAYER_OF[name] == "pure":
                assert top not in IO_MODULES, f"pure module {name} imports {top}"
            if top in WEB_MODULES:
                assert name.startswith("webui"), f"{name} imports the web stack ({top})"
            if top == "prometheus_client":
                assert name == PROMETHEUS_MODULE, f"{name} imports prometheus_client"
            continue
        target = imported.removeprefix("minifaktory.")
        while target not in LAYER_OF and "." in target:
            target = target.rsplit(".", 1)[0]
        if target in LAYER_OF:
            assert ORDER.index(LAYER_OF[target]) <= layer, f"{name} imports {imported}"


def test_sql_lives_in_the_store() -> None:
    for name, path in modules():
        if LAYER_OF.get(name) != "store":
            assert not SQL.search(path.read_text()), f"SQL text in {name}"
