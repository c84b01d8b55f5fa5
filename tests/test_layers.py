"""The dependency rules of docs/architecture.md, checked on the source: dependencies point down
and never sideways. A new import that breaks one fails here, naming the file."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {
    "protocol",
    "gateway",
    "processing",
    "tracking",
    "commands",
    "storage",
    "api",
    "simulator",
    "gp8",
    "throttle",
    "retention",
    "runtime",
}
# Package → the project packages it may import (itself always).
ALLOWED: dict[str, set[str]] = {
    "protocol": set(),
    # Asyncio plumbing (a periodic job) below every layer: imports nothing of gp8.
    "runtime": set(),
    "storage": set(),
    # Failed-authentication throttling, sans-IO: shared by the API and the gateway.
    "throttle": set(),
    "gateway": {"protocol", "storage", "processing", "throttle"},
    "processing": {"storage", "runtime"},
    # Stolen-vehicle tracking: geofences, alert rules, the parked guard, theft cases.
    "tracking": {"processing", "storage", "commands", "protocol", "runtime"},
    "commands": {"protocol", "storage"},
    # protocol: the GP8 enums of warning lights and state bits name the stored bitmasks (other
    # protocols' adapters map onto the same bits); never its codec.
    # Retention, exports' expiry and offboarding, enforced by gp8 (docs/gdpr.md).
    "retention": {"storage", "runtime"},
    "api": {"commands", "storage", "protocol", "tracking", "throttle", "retention", "runtime"},
    # A client, like a real box: it speaks the protocol and borrows nothing of the server.
    "simulator": {"protocol"},
    "gp8": PROJECT,  # the entry points wire everything
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & PROJECT


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_its_layer_may(package: str) -> None:
    allowed = ALLOWED[package] | {package}
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imports(path) - allowed)
        for path in sorted((ROOT / package).rglob("*.py"))
        if _imports(path) - allowed
    }
    assert offenders == {}


def test_every_package_has_a_rule() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert packages <= set(ALLOWED), packages - set(ALLOWED)
