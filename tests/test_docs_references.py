"""Every ``docs/<name>.md`` that gp8's pages and code send a reader to exists (a renamed or
never-written page otherwise leaves a dead pointer: /metrics once pointed to a page that
was never written)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_REFERENCE = re.compile(r"\bdocs/([A-Za-z0-9_-]+\.md)\b")
# Not ours: installed packages, the browser tests' npm tree, git's own files.
_SKIP = {".venv", "node_modules", ".git"}


def _sources() -> list[Path]:
    found = []
    for path in ROOT.rglob("*"):
        if path.suffix not in {".md", ".py", ".html", ".js", ".toml", ".yml", ".yaml"}:
            continue
        if _SKIP.intersection(path.relative_to(ROOT).parts) or not path.is_file():
            continue
        found.append(path)
    return found


def test_every_docs_page_named_exists() -> None:
    sources = _sources()
    assert any(p.name == "architecture.md" for p in sources)  # the walk found the docs
    missing = sorted(
        f"{path.relative_to(ROOT)}: docs/{name}"
        for path in sources
        for name in _REFERENCE.findall(path.read_text(encoding="utf-8", errors="replace"))
        if not (ROOT / "docs" / name).is_file()
    )
    assert missing == []
