"""Fixtures shared by the timeline tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.timelines.helpers import BACKENDS, Backend, make_backend


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """A fresh timelines store of each kind (``make_backend``), its connections closed after the test."""
    b = make_backend(request.param, tmp_path)
    try:
        yield b
    finally:
        await b.close_all()
