"""The package's boundaries and public surface: what api/, gp8/serve.py and the transports use
keeps its name, nothing under commands/ imports the gateway or the API, and only the clock
module reads the time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import commands
from commands import errors

PACKAGE = Path(commands.__file__).parent
MODULES = sorted(PACKAGE.glob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports (top-level name and full dotted name)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names.add(node.module)
    return names | {name.split(".")[0] for name in names}


def test_the_public_surface() -> None:
    assert set(commands.__all__) >= {
        "CommandService",
        "CommandRequest",
        "Requester",
        "Sender",
        "CommandStore",
        "Listener",
        "Clock",
        "CommandMetrics",
        "CommandError",
        "rules",
    }
    for name in commands.__all__:
        assert getattr(commands, name) is not None, name
    hooks = ("on_box_online", "on_box_reply", "on_duplicate_login", "add_sender", "add_listener")
    lifetime = ("start", "stop", "settle", "health", "deliver", "poll", "expire_due")
    api = ("create", "cancel", "approve", "set_policy", "kill_switch", "set_kill_switch")
    for name in (*hooks, *lifetime, *api, "clear_alert"):
        assert callable(getattr(commands.CommandService, name)), name


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_nothing_imports_the_gateway_or_the_api(path: Path) -> None:
    assert not imported(path) & {"gateway", "api", "gp8", "simulator"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_only_the_clock_reads_the_time(path: Path) -> None:
    if path.name != "clock.py":
        assert not imported(path) & {"time", "datetime"}


def test_every_refusal_is_a_command_error_of_one_kind() -> None:
    kinds = (errors.InvalidCommand, errors.NotAllowed, errors.CommandRefused)
    refusals = [
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.CommandError)
    ]
    for cls in refusals:
        assert cls is errors.CommandError or issubclass(cls, kinds), cls
        assert cls.__doc__, cls
