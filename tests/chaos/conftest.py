"""One ``keywheel serve`` for the chaos module, over the session's fake upstream.

Every provider has two keys; the breaker is off (each case is one call; the breaker's
cross-call behaviour has its own tests) and the attempt timeout is short so a hang
costs little.  :meth:`Chaos.fresh` puts every key back in service between cases.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from keywheel.testing import FakeUpstream
from tests.chaos.callers import Inbound
from tests.gateway.conftest import ADMIN_KEY, GATEWAY_KEY, Served, start_gateway
from tests.helpers import fake_env

ATTEMPT_TIMEOUT = 1.0


@dataclass
class Chaos:
    served: Served
    fake: FakeUpstream
    admin: httpx.Client
    clients: dict[str, Any] = field(default_factory=dict)

    def client(self, inbound: Inbound) -> Any:
        """``inbound``'s SDK client for the gateway, made once for the module."""
        if inbound.name not in self.clients:
            self.clients[inbound.name] = inbound.connect(self.url)
        return self.clients[inbound.name]

    @property
    def url(self) -> str:
        return self.served.url

    def status(self) -> dict[str, dict[str, Any]]:
        """``/status`` by provider: the gateway's JSON as parsed (its shape is tested elsewhere)."""
        body = self.admin.get(self.url + "/status").json()
        return {p["provider"]: p for p in body["providers"]}

    def fresh(self, provider: str) -> tuple[str, str]:
        """Every key back in service and the fake's record cleared; ``provider``'s two keys
        in the order keywheel will try them (round robin: the least recently used first)."""
        status = self.status()
        for snap in status.values():
            assert snap["throttled_for"] == 0, snap  # no case may leave a provider throttled
            for key in snap["keys"]:
                if key["state"] != "active":
                    done = self.admin.post(self.url + "/admin/keys/enable", json={"key": key["key"]})
                    assert done.status_code == 200, done.text
        keys = status[provider]["keys"]
        order = sorted(keys, key=lambda k: k["last_used"] or 0.0)
        self.fake.reset()
        first, other = (raw_key(k["key"]) for k in order)
        return first, other


def raw_key(fingerprint: str) -> str:
    """``test-gemini-key-2`` for ``gemini#2 …abcd`` (the fake's keys are named by their label)."""
    provider, _, rest = fingerprint.partition("#")
    return f"test-{provider}-key-{rest.split(' ')[0]}"


@pytest.fixture(scope="module")
def chaos(fake_server: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    fake_server.reset()
    env = fake_env(fake_server, gemini=2, openrouter=2, anthropic=2)
    env.update(
        {
            "KEYWHEEL_GATEWAY_KEYS": GATEWAY_KEY,
            "KEYWHEEL_ADMIN_KEY": ADMIN_KEY,
            "AI_PROVIDER": "gemini",
            "FALLBACK_ORDER": "openrouter,anthropic",
            "KEYWHEEL_BREAKER_FAILURES": "0",
            "KEYWHEEL_ATTEMPT_TIMEOUT": str(ATTEMPT_TIMEOUT),
            "KEYWHEEL_STREAM_IDLE_TIMEOUT": str(ATTEMPT_TIMEOUT),
            # small answer bounds, so the oversized fault crosses them cheaply
            "KEYWHEEL_MAX_RESPONSE_BYTES": str(256 * 1024),
            "KEYWHEEL_MAX_EVENT_BYTES": str(128 * 1024),
            # one window for all: a too-long prompt has nowhere larger to go
            "GEMINI_CONTEXT_WINDOW": "200000",
            "OPENROUTER_CONTEXT_WINDOW": "200000",
            "ANTHROPIC_CONTEXT_WINDOW": "200000",
        }
    )
    served = start_gateway(env, tmp_path_factory.mktemp("chaos") / "gateway.log")
    admin = httpx.Client(headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    chaos = Chaos(served, fake_server, admin)
    try:
        yield chaos
        log = served.log()
        assert "Traceback" not in log, log[-5000:]
    finally:
        for client in chaos.clients.values():
            client.close()
        admin.close()
        served.stop()
        fake_server.reset()
