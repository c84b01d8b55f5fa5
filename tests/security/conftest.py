"""One `gp8 serve` shared by the tests that need no settings of their own beyond these."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.security.serve_process import Provisioned, ServeProcess, provision, start_serve


@pytest.fixture(scope="package")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, Provisioned]]:
    """A `gp8 serve` with low failure limits and the IMEI oracle closed (an unknown IMEI is
    answered BAD_PROOF), and a provisioned fleet; each test attacks from addresses of its own."""
    process = asyncio.run(
        start_serve(
            tmp_path_factory.mktemp("serve"),
            {
                "GP8_API__KEY_FAILURES_PER_SOURCE": "5",
                "GP8_TCP__LOGIN_FAILURES_PER_IMEI": "3",
                "GP8_TCP__LOGIN_FAILURES_PER_SOURCE": "6",
                "GP8_TCP__HIDE_UNKNOWN_DEVICE": "true",
            },
        )
    )
    try:
        yield process, asyncio.run(provision(process.api))
    finally:
        process.stop()
