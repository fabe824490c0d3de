"""The status page in a real headless browser (Debian's Chromium through Playwright), against a real
``keywheel serve`` over the fake upstream: keys active, resting and disabled by a 401; log in, see
every key, the rest counting down, the disabled key's reason, each key's quota-window use, an
OpenRouter key's credit bar after its "check" button read it; disable a key with its button.
Leaves a screenshot at tests/artifacts/status-page.png (git-ignored)."""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keywheel.testing import FakeUpstream
from tests.gateway.conftest import ADMIN_KEY, GATEWAY_KEY, Served, gateways

CHROMIUM = os.environ.get("KEYWHEEL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (Debian package chromium; make sysdeps)"
)


def get(url: str, path: str, key: str | None = ADMIN_KEY, accept: str | None = None) -> tuple[int, Any, Any]:
    request = urllib.request.Request(url + path)
    if key:
        request.add_header("authorization", f"Bearer {key}")
    if accept:
        request.add_header("accept", accept)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def chat(url: str) -> None:
    body = json.dumps({"model": "gemini/gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]}).encode()
    request = urllib.request.Request(url + "/v1/chat/completions", data=body, method="POST")
    request.add_header("authorization", f"Bearer {GATEWAY_KEY}")
    request.add_header("content-type", "application/json")
    with urllib.request.urlopen(request, timeout=20) as resp:
        assert resp.status == 200


def keys(url: str) -> dict[str, dict[str, Any]]:
    _, _, body = get(url, "/status")
    return {k["key"]: k for p in json.loads(body)["providers"] for k in p["keys"]}


@pytest.fixture
def served(fake: FakeUpstream, tmp_path: Path) -> Iterator[Served]:
    fake.set("test-gemini-key-1", "rate_limit", retry_after=600)  # rests 10 min
    fake.set("test-gemini-key-2", "invalid")  # disabled by its 401, with the reason
    fake.set_credit("test-openrouter-key-1", limit=20.0, usage=5.0, limit_reset="monthly")  # 15 of 20 left
    with gateways(fake, tmp_path) as start:
        served = start(
            gemini=4,
            openrouter=1,
            anthropic=0,
            GEMINI_RATE="50/1h",
            GEMINI_RPD="1000",
            GEMINI_API_KEY_3_GROUP="project-a",
            GEMINI_API_KEY_4_GROUP="project-a",
        )
        for _ in range(3):
            chat(served.url)
        yield served


def seconds(text: str) -> int:
    """``"9 min 58 s"`` → 598."""
    units = {"h": 3600, "min": 60, "s": 1}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+) (h|min|s)\b", text))


def test_the_status_page_in_chromium(served: Served, fake: FakeUpstream) -> None:
    from playwright.sync_api import expect, sync_playwright

    url = served.url
    states = keys(url)
    by_state = {k["state"]: fp for fp, k in states.items()}
    resting, dead = by_state["cooling"], by_state["disabled"]
    assert states[resting]["until"] and states[dead]["reason"]
    active = next(fp for fp, k in states.items() if k["state"] == "active" and fp.startswith("gemini"))
    # The page holds no data and needs no auth; curl-like clients still get the plain landing at /.
    status, headers, html = get(url, "/status.html", key=None)
    assert status == 200 and "script-src 'sha256-" in headers["content-security-policy"]
    assert b"test-" not in html and b"gemini#" not in html and b"innerHTML" not in html
    assert b"status page" in get(url, "/", key=None)[2] and b"<script>" not in get(url, "/", key=None)[2]
    assert b"<script>" in get(url, "/", key=None, accept="text/html")[2]

    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))

            # A wrong admin key: told so, back at the login form.
            page.goto(url + "/")
            page.fill("#admin-key", "not-the-admin-key")
            page.click("#login button[type=submit]")
            expect(page.locator("#message")).to_contain_text("wrong or missing admin key")
            expect(page.locator("#login")).to_be_visible()
            problems.clear()  # the browser logs the 401 itself

            page.fill("#admin-key", ADMIN_KEY)
            page.click("#login button[type=submit]")
            rows = page.locator("tr[data-key]")
            expect(rows).to_have_count(len(states))
            for fp, k in states.items():
                row = page.locator(f'tr[data-key="{fp}"]')
                expect(row).to_have_attribute("data-state", k["state"])
                expect(row.locator(".state")).to_have_text(k["state"])
            # the resting key counts down, client-side, from its deadline
            countdown = page.locator(f'tr[data-key="{resting}"] .countdown')
            first = seconds(countdown.inner_text())
            page.wait_for_timeout(2100)
            second = seconds(countdown.inner_text())
            assert 500 < second < first <= 600, (first, second)
            # the disabled key's reason, as /status says it
            expect(page.locator(f'tr[data-key="{dead}"] .reason')).to_contain_text(states[dead]["reason"])
            # a chart per provider; the credit route is either there or said to be missing
            expect(page.locator("section.provider svg.chart")).to_have_count(2)
            if get(url, "/admin/credits")[0] == 404:
                expect(page.locator("#credits-note")).to_contain_text("404")

            # Window use: each gemini key's group windows, as /status has them (GEMINI_RATE).
            gemini = next(p for p in json.loads(get(url, "/status")[2])["providers"] if p["provider"] == "gemini")
            windows = [(fp, w) for g in gemini["groups"] for fp in g["keys"] for w in g["windows"]]
            assert len(windows) == 2 * len(gemini["keys"]) and sum(w["used"] for _, w in windows) >= 2 * 3
            for fp, w in windows:
                cell = page.locator(f'tr[data-key="{fp}"] .windows .window[data-window="{w["name"]}"]')
                expect(cell).to_have_attribute("data-used", str(w["used"]))
                expect(cell).to_contain_text(f"{w['name']} {w['used']}/{w['limit']:,} requests")

            # The OpenRouter key's "check" button: POST /admin/keys/check for that key alone; its outcome
            # shows, and the credit it read fills the credit bar (15 of 20 left: 75 %).
            router = next(fp for fp in states if fp.startswith("openrouter"))
            before = len(fake.requests)
            page.locator(f'tr[data-key="{router}"] button[data-action=check]').click()
            expect(page.locator("#message")).to_contain_text(f"check {router}: ok")
            expect(page.locator(f'tr[data-key="{router}"] .checked')).to_contain_text("ok · ")
            bar = page.locator(f'tr[data-key="{router}"] .credit .bar')
            expect(bar).to_have_attribute("data-remaining", "15")
            expect(bar).to_have_attribute("data-limit", "20")
            assert bar.locator("span").evaluate("node => node.style.width") == "75%"
            expect(page.locator(f'tr[data-key="{router}"] .credit')).to_contain_text("15 / 20 left (monthly)")
            assert keys(url)[router]["credit"]["limit_remaining"] == 15.0
            probes = [(r.key, r.method, r.path) for r in fake.requests[before:]]
            assert probes == [("test-openrouter-key-1", "GET", "/api/v1/key")], probes
            # The disabled key's check: its outcome, and still only that key probed.
            before = len(fake.requests)
            page.locator(f'tr[data-key="{dead}"] button[data-action=check]').click()
            expect(page.locator("#message")).to_contain_text(f"check {dead}: invalid")
            expect(page.locator(f'tr[data-key="{dead}"] .checked')).to_contain_text("invalid · ")
            assert [(r.key, r.path) for r in fake.requests[before:]] == [("test-gemini-key-2", "/v1beta/models")]
            problems.clear()  # nothing the page did wrong: the check's answer was a 200

            # Disable an active key with its button: its state changes on the page and in the gateway.
            page.locator(f'tr[data-key="{active}"] button[data-action=disable]').click()
            expect(page.locator(f'tr[data-key="{active}"]')).to_have_attribute("data-state", "disabled")
            expect(page.locator(f'tr[data-key="{active}"] .reason')).to_contain_text("disabled from the status page")
            assert keys(url)[active]["state"] == "disabled"

            # Export: the key list as a JSON download, fingerprints only.
            with page.expect_download() as download:
                page.click("#export")
            exported = json.loads(Path(download.value.path()).read_text())
            assert {k["key"] for k in exported["keys"]} == set(states) and "test-" not in json.dumps(exported)

            # Add a key with the form: a new row, and the key itself nowhere on the page.
            page.select_option("#add-provider", "gemini")
            page.fill("#add-key", "test-gemini-key-5")
            page.click("#add-form button[type=submit]")
            expect(rows).to_have_count(len(states) + 1)
            expect(page.locator("#message")).to_contain_text("added gemini#")
            assert page.input_value("#add-key") == ""

            # The admin key lives in this tab's sessionStorage, never in a cookie, never on the page.
            assert page.evaluate("sessionStorage.getItem('keywheel-admin-key')") == ADMIN_KEY
            assert page.evaluate("document.cookie") == "" and not page.context.cookies()
            content = page.content()
            assert ADMIN_KEY not in content and "test-gemini-key" not in content and "test-openrouter" not in content

            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "status-page.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"status page screenshot: {shot}")
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    csp = [p for p in problems if "Content Security Policy" in p or "Refused" in p]
    assert not csp and not [p for p in problems if "Uncaught" in p or "Error" in p], problems
