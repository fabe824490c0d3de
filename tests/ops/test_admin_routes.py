"""The admin routes and the page in-process (ASGI), and Wheel.reload's provider-level cases."""

from __future__ import annotations

import httpx2

from keywheel import Wheel
from keywheel.config import settings_from_env
from keywheel.gateway import Gateway
from keywheel.testing import FakeUpstream
from tests.helpers import fake_env

ADMIN = {"authorization": "Bearer test-admin-key-0123456789"}


async def test_admin_routes_refuse_what_is_wrong_plainly(fake: FakeUpstream) -> None:
    env = fake_env(fake, KEYWHEEL_ADMIN_KEY="test-admin-key-0123456789")
    wheel = Wheel(settings_from_env(env))
    transport = httpx2.ASGITransport(app=Gateway(wheel))  # mounted in-process: nothing to reload from
    async with httpx2.AsyncClient(transport=transport, base_url="http://gateway") as client:
        resp = await client.post("/admin/reload", headers=ADMIN)
        assert resp.status_code == 409 and "not started by keywheel serve" in resp.text
        assert (await client.get("/admin/reload", headers=ADMIN)).status_code == 405
        assert (await client.post("/admin/keys", headers=ADMIN)).status_code == 405
        assert (await client.get("/admin/other", headers=ADMIN)).status_code == 404
        assert (await client.post("/admin/keys/explode", json={}, headers=ADMIN)).status_code == 404
        resp = await client.post("/admin/keys/add", json=["gemini"], headers=ADMIN)
        assert resp.status_code == 400 and "JSON object" in resp.text
        resp = await client.post("/admin/keys/add", json={"provider": "gemini"}, headers=ADMIN)
        assert resp.status_code == 400 and "lacks key" in resp.text
        resp = await client.post("/admin/keys/disable", json={}, headers=ADMIN)
        assert resp.status_code == 400 and "lacks key" in resp.text
        resp = await client.post("/admin/keys/add", content=b"{", headers=ADMIN)
        assert resp.status_code == 400 and "must be JSON" in resp.text
        listing = (await client.get("/admin/keys", headers=ADMIN)).json()
        assert len(listing["keys"]) == 8 and {"provider", "key", "state", "reason"} == set(listing["keys"][0])
        assert "test-" not in str(listing)
        assert (await client.get("/admin/keys")).status_code == 401
        # the page: GET and HEAD, with its policy; a browser's / too
        page = await client.get("/status.html")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in page.headers["content-security-policy"]
        head = await client.head("/status.html")
        assert (
            head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(page.content))
        )
        browser = await client.get("/", headers={"accept": "text/html,application/xhtml+xml"})
        assert browser.content == page.content
        assert (await client.get("/")).content != page.content  # curl gets the small landing
    await wheel.aclose()
    wheel.close()


def test_wheel_reload_adds_and_drops_providers_and_remembers_old_secrets(fake: FakeUpstream) -> None:
    first = settings_from_env(fake_env(fake, gemini=2, openrouter=0, anthropic=0))
    with Wheel(first) as wheel:
        old_router = wheel.router
        summary = wheel.reload(settings_from_env(fake_env(fake, gemini=1, openrouter=2, anthropic=0)))
        assert [fp.split(" ")[0] for fp in summary.added] == ["openrouter#1", "openrouter#2"]
        assert [fp.split(" ")[0] for fp in summary.removed] == ["gemini#2"] and summary.kept == 1
        assert summary.chain == ["gemini", "openrouter"] and wheel.router is not old_router
        assert set(wheel.pools) == {"gemini", "openrouter"}
        summary = wheel.reload(settings_from_env(fake_env(fake, gemini=0, openrouter=1, anthropic=0)))
        assert [fp.split(" ")[0] for fp in summary.removed] == ["openrouter#2", "gemini#1"]
        assert set(wheel.pools) == {"openrouter"} and summary.chain == ["openrouter"]
        assert "test-gemini-key-2" in wheel.secrets()  # a removed key stays redacted
        assert wheel.chat([{"role": "user", "content": "hi"}]).provider == "openrouter"
