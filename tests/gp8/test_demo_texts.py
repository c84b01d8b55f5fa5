"""What people read from the `gp8` command: help without developer prose, flags with their
defaults, and the API's field names in `gp8 admin` output."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from gp8.cli import build_parser, main


def test_gp8_help_is_for_users() -> None:
    text = build_parser().format_help()
    assert "only place that reads Settings" not in text
    assert "gp8 demo" in text


def test_every_demo_flag_with_a_default_states_it() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [
        action.option_strings[0]
        for action in sub.choices["demo"]._actions
        if action.option_strings
        and action.default not in (None, False, argparse.SUPPRESS)
        and "default" not in (action.help or "")
    ]
    assert not missing


def test_admin_list_fleets_says_created_at_as_the_api(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    assert main(["admin", "--data-dir", data, "create-fleet", "--name", "Acme"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert main(["admin", "--data-dir", data, "list-fleets"]) == 0
    (listed,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed == created
    assert set(listed) == {"id", "name", "created_at"}
    assert listed["created_at"].endswith("Z")
