from __future__ import annotations

from collections.abc import Iterator

import pytest

from keywheel import Wheel
from keywheel.config import settings_from_env
from keywheel.testing import FakeUpstream
from tests.helpers import WheelFactory, env_of


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(fake_server: FakeUpstream) -> Iterator[FakeUpstream]:
    fake_server.reset()
    yield fake_server
    fake_server.reset()


@pytest.fixture
def make_wheel(fake: FakeUpstream) -> Iterator[WheelFactory]:
    made: list[Wheel] = []

    def factory(**kwargs: object) -> Wheel:
        wheel = Wheel(settings_from_env(env_of(fake, kwargs)))
        made.append(wheel)
        return wheel

    yield factory
    for wheel in made:
        wheel.close()


# A real redis-server per test (tests/redis_server.py); other test packages use it by name.
from tests.redis_server import redis_process, redis_server, redis_session  # noqa: E402, F401
