"""Reload: ``POST /admin/reload`` and SIGHUP read the configuration again, on a real ``keywheel serve``
over the fake upstream; under load (2,000 requests, 100 at a time) nothing fails because of it."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from keywheel.testing import FakeUpstream
from tests.gateway.conftest import ADMIN_KEY, GATEWAY_KEY, Served, start_gateway
from tests.helpers import fake_env

CHAT = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}


def write_env(path: Path, fake: FakeUpstream, keys: list[int], **extra: str) -> None:
    env = fake_env(fake, gemini=0, openrouter=0, anthropic=0, KEYWHEEL_GATEWAY_KEYS=GATEWAY_KEY)
    env["KEYWHEEL_ADMIN_KEY"] = ADMIN_KEY
    env.update({f"GEMINI_API_KEY_{i}": f"test-gemini-key-{i}" for i in keys})
    env.update(extra)
    path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))


def admin(url: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method="GET" if body is None else "POST")
    request.add_header("authorization", f"Bearer {ADMIN_KEY}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def keys_of(url: str) -> dict[str, dict[str, Any]]:
    _, status = admin(url, "/status")
    return {k["key"]: k for p in status["providers"] for k in p["keys"]}


def serve(tmp_path: Path, env_file: Path) -> Served:
    return start_gateway({}, tmp_path / "gateway.log", "--env-file", str(env_file))


async def load(url: str, total: int, concurrency: int, reload_after: int) -> tuple[list[tuple[float, int, str]], float]:
    """``total`` chat requests, ``concurrency`` at a time; after ``reload_after`` have answered, one
    ``POST /admin/reload``.  Each request: (monotonic start, status, serving key); and when the
    reload answered."""
    results: list[tuple[float, int, str]] = []
    reloaded = asyncio.Event()
    done_at = [0.0]
    gate = asyncio.Semaphore(concurrency)
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    admin_headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    connector = aiohttp.TCPConnector(limit=concurrency + 5)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with gate:
                started = time.monotonic()
                async with session.post(url + "/v1/chat/completions", json=CHAT, headers=headers) as resp:
                    await resp.read()
                    results.append((started, resp.status, resp.headers.get("x-keywheel-key", "")))
                if len(results) == reload_after:
                    async with session.post(url + "/admin/reload", headers=admin_headers) as resp:
                        assert resp.status == 200, await resp.text()
                    done_at[0] = time.monotonic()
                    reloaded.set()

        await asyncio.gather(*(one() for _ in range(total)))
    assert reloaded.is_set()
    return results, done_at[0]


def test_reload_under_load_adds_and_removes_keys(fake: FakeUpstream, tmp_path: Path) -> None:
    env_file = tmp_path / "keywheel.env"
    write_env(env_file, fake, [1, 2, 3])
    for i in (1, 2, 3, 4):
        fake.set(f"test-gemini-key-{i}", "hang", seconds=0.05)  # every request stays in flight a while
    served = serve(tmp_path, env_file)
    try:
        before = keys_of(served.url)
        assert len(before) == 3
        removed = next(fp for fp in before if fp.startswith("gemini#3 "))
        write_env(env_file, fake, [1, 2, 4])  # the reload will remove key 3 and add key 4
        results, reloaded_at = asyncio.run(load(served.url, 2000, 100, reload_after=500))
        after = keys_of(served.url)
    finally:
        served.stop()
    statuses = [status for _, status, _ in results]
    assert len(results) == 2000
    assert statuses.count(200) == 2000, {s: statuses.count(s) for s in set(statuses)}
    added = next(fp for fp in after if fp.startswith("gemini#4 "))
    assert removed not in after and set(after) == (set(before) - {removed}) | {added}
    later = [key for started, _, key in results if started > reloaded_at]
    assert len(later) > 300  # the load went on well past the reload
    assert removed.replace("…", "...") not in later  # nothing started after the reload went to the removed key
    assert later.count(added.replace("…", "...")) > 0  # the added key serves
    assert fake.count("test-gemini-key-4") > 0  # ... upstream too (the fake's log)
    in_flight = sum(1 for started, _, _ in results if started <= reloaded_at) - 500  # started, not answered
    print(
        f"reload under load: 2000/2000 answered 200; {in_flight} in flight at the reload; {len(later)} started "
        f"after it: {later.count(added.replace('…', '...'))} served by the added key, 0 by the removed one; "
        f"the fake saw the added key {fake.count('test-gemini-key-4')} times"
    )
    # the kept keys kept their counters across the reload: every request they ever served
    for i in (1, 2):
        fp = next(fp for fp in after if fp.startswith(f"gemini#{i} "))
        assert after[fp]["requests"] == fake.count(f"test-gemini-key-{i}") > 0
    assert after[added]["requests"] == fake.count("test-gemini-key-4")


def test_reload_keeps_state_refuses_a_bad_configuration_and_follows_sighup(fake: FakeUpstream, tmp_path: Path) -> None:
    env_file = tmp_path / "keywheel.env"
    write_env(env_file, fake, [1, 2])
    served = serve(tmp_path, env_file)
    try:
        first = keys_of(served.url)
        one = next(fp for fp in first if fp.startswith("gemini#1 "))
        assert admin(served.url, "/admin/keys/disable", {"key": one, "reason": "kept across reloads"})[0] == 200

        # A configuration that fails to load: refused whole, with its problems; the old one stays.
        write_env(env_file, fake, [1, 2, 3], KEYWHEEL_TIMEOUT="soon", FALLBACK_ORDER="nosuch")
        code, body = admin(served.url, "/admin/reload", {})
        assert code == 400
        assert set(body["problems"]) == {"KEYWHEEL_TIMEOUT", "FALLBACK_ORDER"}
        assert "not reloaded" in body["error"]["message"]
        assert set(keys_of(served.url)) == set(first)

        # A good one: the disabled key stays disabled, with its reason; key 3 joins.
        write_env(env_file, fake, [1, 2, 3])
        code, body = admin(served.url, "/admin/reload", {})
        assert code == 200 and body["kept"] == 2 and body["removed"] == []
        assert [fp.split(" ")[0] for fp in body["added"]] == ["gemini#3"]
        keys = keys_of(served.url)
        assert keys[one]["state"] == "disabled" and keys[one]["reason"] == "kept across reloads"

        # SIGHUP reads it again too: key 2 goes.
        write_env(env_file, fake, [1, 3])
        served.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(keys_of(served.url)) != 2:
            time.sleep(0.05)
        assert sorted(fp.split(" ")[0] for fp in keys_of(served.url)) == ["gemini#1", "gemini#3"]
        assert served.process.poll() is None  # SIGHUP did not end it
    finally:
        served.stop()
    log = served.log()
    assert "reload refused, the running configuration stays: KEYWHEEL_TIMEOUT" in log
    assert "configuration reloaded: 1 key(s) added, 0 removed, 2 kept" in log
    assert "SIGHUP: reading the configuration again" in log
    assert "test-gemini-key" not in log
