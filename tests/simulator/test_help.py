"""`gp8 sim --help` is for users: no developer prose or reST markup, and every flag with a
default says what it is."""

from __future__ import annotations

import argparse

from gp8.cli import build_parser


def _sim_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["sim"]


def test_sim_help_has_no_rest_markup() -> None:
    text = _sim_parser().format_help()
    assert "``" not in text and ":func:" not in text
    assert "--api URL --key KEY" in text


def test_every_sim_flag_with_a_default_states_it() -> None:
    missing = [
        action.option_strings[0]
        for action in _sim_parser()._actions
        if action.option_strings
        and action.default not in (None, False, argparse.SUPPRESS)
        and "default" not in (action.help or "")
    ]
    assert not missing, f"flags whose help does not state their default: {missing}"
