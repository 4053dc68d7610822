"""Shared fixtures: the real labelled samples under ../shared/data (read-only)."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the shared samples; tests that need it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared samples not found at {SHARED_DATA} (see README: Test data)")
    return SHARED_DATA
