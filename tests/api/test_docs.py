"""docs/api.md against the code: every route of the OpenAPI document is in it, and every
problem type the code can answer is in its table of errors."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI

from api.stream.protocol import StreamError

ROOT = Path(__file__).resolve().parents[2]
API_DOC = (ROOT / "docs" / "api.md").read_text()
_PARAM = re.compile(r"\{[^}]*\}")
_DOC_ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^\s`?]*)")
# A problem type written out, or made from the command problems' prefix (api/problems.py).
_TYPE = re.compile(r'urn:gp8:problem:([a-z][a-z-]*)|_PROBLEM \+ "([a-z-]+)"')


def _shape(path: str) -> str:
    return _PARAM.sub("{}", path)


def test_every_openapi_route_is_in_api_md(app: FastAPI) -> None:
    documented = {(m, _shape(p)) for m, p in _DOC_ROUTE.findall(API_DOC)}
    missing = [
        f"{method.upper()} {path}"
        for path, operations in app.openapi()["paths"].items()
        for method in operations
        if (method.upper(), _shape(path)) not in documented
    ]
    assert not missing, f"routes not in docs/api.md: {missing}"


def test_every_problem_type_in_code_is_in_the_errors_table() -> None:
    used: set[str] = set()
    for source in (ROOT / "api").rglob("*.py"):
        for written, suffix in _TYPE.findall(source.read_text()):
            used.add(written or suffix)
    assert {"conflict", "command-state", "not-acceptable"} <= used  # the scan finds them
    errors = API_DOC[API_DOC.index("## Errors") :]
    missing = sorted(t for t in used if f"`urn:gp8:problem:{t}`" not in errors)
    assert not missing, f"problem types not in the docs/api.md errors table: {missing}"


def test_every_stream_error_is_in_the_stream_table() -> None:
    stream = API_DOC[API_DOC.index("## Live stream") : API_DOC.index("## Errors")]
    missing = [e.value for e in StreamError if f"`{e.value}`" not in stream]
    assert not missing
