"""One ``keywheel serve`` for the whole fuzz module, over the fake upstream behind a recording relay."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from keywheel.testing import FakeUpstream
from tests.fuzz.harness import Relay
from tests.gateway.conftest import ADMIN_KEY, GATEWAY_KEY, Served, start_gateway

GEMINI_MODEL = "gemini-2.5-flash"


@dataclass
class FuzzTarget:
    served: Served
    relay: Relay
    fake: FakeUpstream
    log_seen: int = 0

    @property
    def port(self) -> int:
        return int(self.served.url.rsplit(":", 1)[1])

    def new_log(self) -> str:
        """The server's log (stdout and stderr) written since the last call."""
        with self.served.log_path.open("rb") as log:
            log.seek(self.log_seen)
            fresh = log.read()
        self.log_seen += len(fresh)
        return fresh.decode(errors="replace")


@pytest.fixture(scope="module")
def target(fake_server: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    fake_server.reset()
    relay = Relay(int(fake_server.url.rsplit(":", 1)[1])).start()
    env = {
        "GEMINI_BASE_URL": relay.url,
        "OPENROUTER_BASE_URL": relay.url + "/api/v1",
        "ANTHROPIC_BASE_URL": relay.url,
        "GEMINI_MODEL": GEMINI_MODEL,
        "KEYWHEEL_MAX_WAIT": "0",
        "KEYWHEEL_GATEWAY_KEYS": GATEWAY_KEY,
        "KEYWHEEL_ADMIN_KEY": ADMIN_KEY,
        "KEYWHEEL_BODY_TIMEOUT": "1",  # a body that never completes costs a fuzz case one second, not thirty
        "KEYWHEEL_HEADER_TIMEOUT": "2",
    }
    for name, count in (("gemini", 2), ("openrouter", 2), ("anthropic", 2)):
        for i in range(1, count + 1):
            env[f"{name.upper()}_API_KEY_{i}"] = f"test-{name}-key-{i}"
    served = start_gateway(env, tmp_path_factory.mktemp("fuzz") / "gateway.log")
    try:
        yield FuzzTarget(served, relay, fake_server)
    finally:
        served.stop()
        relay.stop()
        fake_server.reset()
