"""Claude Code itself (``claude -p``, the version the Makefile pins) against a real ``keywheel serve``.

Served by the Anthropic upstream (pass-through: Claude Code 2.1 sends ``role: "system"`` turns with
``output_config`` inside ``messages``) and across dialects (Gemini, OpenRouter).  The fake upstream's
answer names its dialect and the request number, so the text Claude Code prints proves which upstream
answered which request.  No ``/v1/messages`` request may get a 4xx.

``make test`` installs Claude Code into ``.cache/node`` (npm); when it is missing this test tries the
same ``make claude-code`` once, and skips when npm cannot install it, except under ``CI=true``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from keywheel.testing import FakeUpstream
from keywheel.testing.dialects import QUICK_BROWN_FOX
from tests.gateway.conftest import GATEWAY_KEY, GatewayFactory, Served, start_gateway
from tests.helpers import fake_env

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / ".cache" / "node"


def _pinned_version() -> str:
    found = re.search(r"^CLAUDE_CODE_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert found, "the Makefile pins CLAUDE_CODE_VERSION"
    return found.group(1)


def _binary() -> Path | None:
    # npm unpacks the native binary into the package for this platform (claude-code-linux-x64 …).
    found = sorted(NODE_DIR.glob("node_modules/@anthropic-ai/claude-code-*/claude"))
    return found[0] if found else None


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"Claude Code is needed under CI=true: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def claude() -> Path:
    version = _pinned_version()
    binary = _binary()
    if binary is None and shutil.which("npm") and shutil.which("make"):
        subprocess.run(["make", "-s", "claude-code"], cwd=ROOT, capture_output=True, timeout=900, check=False)
        binary = _binary()
    if binary is None:
        _unavailable(f"npm could not install @anthropic-ai/claude-code@{version} (make claude-code)")
    assert binary is not None
    shown = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False)
    if version not in shown.stdout:
        _unavailable(f"{binary} is {shown.stdout.strip()!r}, not the pinned {version}: run make claude-code")
    return binary


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, fake_server: FakeUpstream) -> Iterator[Served]:
    env = fake_env(fake_server, AI_PROVIDER="anthropic", KEYWHEEL_GATEWAY_KEYS=GATEWAY_KEY)
    gateway = start_gateway(env, tmp_path_factory.mktemp("claude-code") / "gateway.log")
    yield gateway
    gateway.stop()


def run_claude(
    claude: Path, served: Served, home: Path, *args: str, auth: str = "ANTHROPIC_API_KEY", **env: str
) -> subprocess.CompletedProcess[str]:
    home.mkdir(exist_ok=True)
    full = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "ANTHROPIC_BASE_URL": served.url,
        auth: GATEWAY_KEY,
        **env,
    }
    return subprocess.run(
        [str(claude), "-p", "Say hello", *args], env=full, cwd=home, capture_output=True, text=True, timeout=180
    )


def messages_statuses(served: Served, since: int) -> list[int]:
    """Statuses the gateway logged for ``/v1/messages…`` requests after ``since`` characters of its log."""
    return [int(s) for s in re.findall(r"POST /v1/messages\S* (\d{3}) ", served.log()[since:])]


@pytest.mark.parametrize(
    ("model", "dialect", "auth"),
    [
        ("", "anthropic", "ANTHROPIC_API_KEY"),  # Claude Code's default model: a claude-… name, to Anthropic
        ("gemini/gemini-2.5-flash", "gemini", "ANTHROPIC_AUTH_TOKEN"),
        ("openrouter/openai/gpt-4o-mini", "openai", "ANTHROPIC_API_KEY"),
    ],
)
def test_claude_code_answers_through_the_gateway(
    claude: Path, served: Served, fake: FakeUpstream, tmp_path: Path, model: str, dialect: str, auth: str
) -> None:
    since = len(served.log())
    chosen = ["--model", model] if model else []
    done = run_claude(claude, served, tmp_path / "home", *chosen, "--tools", "", auth=auth)
    assert done.returncode == 0, done.stdout + done.stderr
    answer = re.fullmatch(rf"Reply (\d+) from fake {dialect}: {re.escape(QUICK_BROWN_FOX)}", done.stdout.strip())
    assert answer, done.stdout
    chats = [r for r in fake.requests if r.method == "POST"]
    assert int(answer.group(1)) in [r.seq for r in chats if r.dialect == dialect]  # that upstream wrote it
    if dialect == "anthropic":  # the 2.1 shapes reached the upstream as they were sent
        turns = [m for r in chats for m in r.body["messages"] if m.get("role") == "system"]
        assert turns and "output_config" in turns[0], [m.get("role") for r in chats for m in r.body["messages"]]
    statuses = messages_statuses(served, since)
    assert statuses and all(s < 400 for s in statuses), statuses


def test_claude_code_tool_round_trip_across_dialects(
    claude: Path, served: Served, fake: FakeUpstream, tmp_path: Path
) -> None:
    # The fake calls the one tool offered; Claude Code runs it and sends the result back, translated.
    since = len(served.log())
    done = run_claude(claude, served, tmp_path / "home", "--model", "gemini/gemini-2.5-flash", "--tools", "Read")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.match(r"Reply \d+ from fake gemini: the tool said ", done.stdout.strip()), done.stdout
    last = [r for r in fake.requests if r.method == "POST"][-1]
    assert any("functionResponse" in p for c in last.body["contents"] for p in c["parts"])
    statuses = messages_statuses(served, since)
    assert len(statuses) >= 2 and all(s < 400 for s in statuses), statuses


def test_claude_code_when_every_key_rests(
    claude: Path, gateway: GatewayFactory, fake: FakeUpstream, tmp_path: Path
) -> None:
    """What the README promises: Claude Code retries a 429 silently, CLAUDE_CODE_MAX_RETRIES bounds it,
    then it prints the gateway's message."""
    served = gateway(gemini="0", openrouter="0", anthropic="1", AI_PROVIDER="anthropic")
    fake.set("test-anthropic-key-1", "rate_limit", retry_after=1)
    done = run_claude(claude, served, tmp_path / "home", "--tools", "", CLAUDE_CODE_MAX_RETRIES="1")
    assert done.returncode != 0
    assert "429" in done.stdout and "1 resting (the earliest back in" in done.stdout, done.stdout + done.stderr
    assert messages_statuses(served, 0) == [429, 429]  # the first try and one retry
