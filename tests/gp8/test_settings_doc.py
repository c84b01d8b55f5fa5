"""docs/configuration.md is generated from the live Settings class and must match it."""

from __future__ import annotations

from pathlib import Path

from gp8.settings_doc import render, settings_rows

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_page_matches_the_settings_class() -> None:
    # On failure: python -m gp8.settings_doc > docs/configuration.md
    assert PAGE.read_text(encoding="utf-8") == render()


def test_every_setting_has_a_description() -> None:
    undocumented = [row.env for row in settings_rows() if not row.description]
    assert undocumented == []


def test_rows_flatten_groups_with_the_env_delimiter() -> None:
    rows = {row.env: row for row in settings_rows()}
    assert rows["GP8_TCP__PORT"].type == "int"
    assert rows["GP8_TCP__PORT"].default == "`5027`"
    assert rows["GP8_MONGO_URL"].default == "unset"
    assert rows["GP8_LOG_FORMAT"].type == '"json" \\| "text" \\| None'
