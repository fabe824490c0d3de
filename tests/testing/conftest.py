"""One fake upstream for the whole directory; every test starts from a clean slate."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from keywheel.testing import FakeUpstream


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeUpstream) -> Iterator[FakeUpstream]:
    fake_server.reset()
    yield fake_server
    fake_server.reset()
