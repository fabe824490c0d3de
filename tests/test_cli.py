"""The keywheel command, run as a real process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from keywheel.testing import FakeUpstream
from tests.gateway.conftest import ADMIN_KEY, free_port, start_gateway
from tests.helpers import fake_env, measured

KEYWHEEL = [sys.executable, "-m", "keywheel.cli"]
ROOT = Path(__file__).resolve().parents[1]
LOG_LINE = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR)\b|^\d{4}-\d\d-\d\d", re.MULTILINE)


def run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": str(cwd), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        KEYWHEEL + args,
        env=measured({**base, **env}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_chat_without_any_key_says_how_to_configure(tmp_path: Path) -> None:
    result = run(["chat", "hello"], {}, tmp_path)
    assert result.returncode == 2
    assert "GEMINI_API_KEY_1" in result.stderr and "keywheel demo" in result.stderr


def test_chat_with_a_bad_config_names_the_variable(tmp_path: Path) -> None:
    result = run(["chat", "hello"], {"GEMINI_API_KEY_1": "test-k", "AI_PROVIDER": "nope"}, tmp_path)
    assert result.returncode == 2 and "AI_PROVIDER" in result.stderr


def test_chat_answers_and_says_who_served(fake: FakeUpstream, tmp_path: Path) -> None:
    env = fake_env(fake, AI_PROVIDER="openrouter", FALLBACK_ORDER="gemini")
    fake.set("test-openrouter-key-1", "overloaded")
    fake.set("test-openrouter-key-2", "overloaded")
    result = run(["chat", "-v", "hello", "there"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "from fake gemini" in result.stdout
    assert "served by gemini gemini#1" in result.stdout
    assert "tried openrouter openrouter#" in result.stdout and "Overloaded" in result.stdout
    for key in ("test-openrouter-key-1", "test-gemini-key-1"):
        assert key not in result.stdout + result.stderr


def test_chat_reads_dotenv_file(fake: FakeUpstream, tmp_path: Path) -> None:
    env = fake_env(fake, AI_PROVIDER="anthropic")
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    result = run(["chat", "--no-stream", "-v", "hi"], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "from fake anthropic" in result.stdout and "served by anthropic" in result.stdout


def test_status_lists_keys_by_fingerprint(fake: FakeUpstream, tmp_path: Path) -> None:
    result = run(["status", "--local"], {**fake_env(fake, AI_PROVIDER="gemini"), "COLUMNS": "200"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "gemini#1" in result.stdout and "openrouter#2" in result.stdout
    assert "test-gemini-key-1" not in result.stdout


# ------------------------------------------------------------------ the first five minutes


def template_key_lines() -> list[str]:
    """The key lines .env.example leaves for the user to fill in (uncommented ``NAME=`` lines)."""
    names = re.findall(r"^([A-Z0-9_]+)=$", (ROOT / ".env.example").read_text(), re.MULTILINE)
    assert names, "the template has no key lines"
    return names


def test_template_leaves_switches_commented_out() -> None:
    text = (ROOT / ".env.example").read_text()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            assert value == "" and re.fullmatch(r"[A-Z]+_API_KEY(_\d+)?", name), line
    for name in ("AI_PROVIDER", "ENABLE_GEMINI", "ENABLE_OPENROUTER", "ENABLE_ANTHROPIC", "FALLBACK_ORDER"):
        assert re.search(rf"^# {name}=\S", text, re.MULTILINE), f"{name} should be shown commented out with its default"


@pytest.mark.parametrize("variable", template_key_lines())
def test_env_example_with_one_key_filled_in_starts_the_gateway(
    variable: str, fake: FakeUpstream, tmp_path: Path
) -> None:
    """Copy .env.example, fill in one key line, run `keywheel run` (what `make run` runs) with
    --env-file in a temporary folder: the gateway comes up and answers through that key."""
    provider = variable.split("_")[0].lower()
    key = f"test-{provider}-key-1"
    text = (ROOT / ".env.example").read_text().replace(f"\n{variable}=\n", f"\n{variable}={key}\n")
    assert f"{variable}={key}" in text
    port = free_port()
    # Only where the fake lives and where to listen are added; no provider switch.
    text += (
        f"GEMINI_BASE_URL={fake.gemini_base_url}\nOPENROUTER_BASE_URL={fake.openrouter_base_url}\n"
        f"ANTHROPIC_BASE_URL={fake.anthropic_base_url}\nKEYWHEEL_PORT={port}\n"
    )
    env_file = tmp_path / "my.env"
    env_file.write_text(text)
    log = (tmp_path / "run.log").open("wb")
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen(
        [*KEYWHEEL, "run", "--env-file", str(env_file)],
        cwd=tmp_path,
        env=measured(base),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
        body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).encode()
        request = urllib.request.Request(url + "/v1/chat/completions", body, {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            answer = json.loads(resp.read())
            assert resp.headers["x-keywheel-provider"] == provider
        dialect = {"openrouter": "openai"}.get(provider, provider)  # the fake names its wire dialect
        assert f"from fake {dialect}" in answer["choices"][0]["message"]["content"]
        assert fake.count(key) == 1
    finally:
        process.terminate()
        process.wait(10)
        log.close()
    assert not (tmp_path / ".env").exists()


def test_make_runs_demo_has_no_log_lines_and_fits_80_columns(tmp_path: Path) -> None:
    """`keywheel run` with no key (what `make run` does first) shows the demo, at 80 columns."""
    (tmp_path / "empty.env").write_text("")
    result = run(["run", "--env-file", "empty.env"], {"COLUMNS": "80"}, tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout + result.stderr
    assert not LOG_LINE.search(out), LOG_LINE.search(out)
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    rows = re.findall(r"^ ?((?:gemini|openrouter|anthropic)#\d …[0-9a-f]{4}) +(active|cooling|disabled)\b", out, re.M)
    assert sorted(fp.split(" ")[0] for fp, _ in rows) == sorted(
        [f"gemini#{i}" for i in range(1, 5)] + [f"openrouter#{i}" for i in range(1, 4)] + ["anthropic#1", "anthropic#2"]
    )
    states = {fp.split(" ")[0]: state for fp, state in rows}
    assert states["gemini#4"] == "disabled" and states["openrouter#3"] == "disabled"
    assert "invalid×1" in out and "quota×1" in out
    assert not re.search(r"\w…(\s|$)", out), "a word cut short with an ellipsis"
    assert "120 answered, 0 failed" in out
    assert "gemini#4 (revoked) received 1 request(s), then none" in out
    assert "test-gemini-key" not in out


# ------------------------------------------------------------------------- CLI basics


def test_version_and_global_flags_after_the_subcommand(fake: FakeUpstream, tmp_path: Path) -> None:
    result = run(["--version"], {}, tmp_path)
    assert result.returncode == 0 and re.fullmatch(r"keywheel \d+\.\d+\S*\n", result.stdout), result.stdout
    env_file = tmp_path / "x.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in fake_env(fake, AI_PROVIDER="anthropic").items()))
    after = run(["chat", "--no-stream", "hi", "--env-file", str(env_file), "--log-level", "debug"], {}, tmp_path)
    assert after.returncode == 0, after.stderr
    assert "from fake anthropic" in after.stdout and "DEBUG" in after.stderr
    before = run(["--env-file", str(env_file), "config"], {}, tmp_path)
    assert before.returncode == 0 and "anthropic#1" in before.stdout


def test_a_named_env_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    for args in (
        ["chat", "hi", "--env-file", "nope.env"],
        ["--env-file", "nope.env", "status"],
        ["config", "--env-file", "nope.env"],
    ):
        result = run(args, {"GEMINI_API_KEY_1": "test-gemini-key-1"}, tmp_path)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "nope.env" in result.stderr and "does not exist" in result.stderr


def test_config_prints_the_resolved_configuration_and_checks_it(fake: FakeUpstream, tmp_path: Path) -> None:
    env = fake_env(fake, AI_PROVIDER="gemini", FALLBACK_ORDER="anthropic", KEYWHEEL_MAX_WAIT="3")
    env["OPENROUTER_API_KEY_2"] = "AIza-fake-gemini-shaped-key"
    result = run(["config"], {**env, "COLUMNS": "120"}, tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "gemini → anthropic" in out
    for fingerprint in ("gemini#1 …", "gemini#4 …", "anthropic#2 …", "openrouter#2 …"):
        assert fingerprint in out
    assert "looks like a gemini key" in out and "OPENROUTER_API_KEY_2" in out
    assert re.search(r"KEYWHEEL_MAX_WAIT\s+3 s", out)
    for key in ("test-gemini-key-1", "AIza-fake-gemini-shaped-key"):
        assert key not in out + result.stderr
    bad = run(["config"], {**env, "AI_PROVIDER": "nope", "KEYWHEEL_TIMEOUT": "soon"}, tmp_path)
    assert bad.returncode == 2
    assert "AI_PROVIDER" in bad.stderr and "KEYWHEEL_TIMEOUT" in bad.stderr and "unknown provider" in bad.stderr


def test_chat_max_tokens_and_no_fallback(fake: FakeUpstream, tmp_path: Path) -> None:
    env = fake_env(fake, AI_PROVIDER="openrouter", FALLBACK_ORDER="gemini")
    result = run(["chat", "--no-stream", "--max-tokens", "7", "hi"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    (request,) = [r for r in fake.requests if r.method == "POST"]
    assert request.body["max_tokens"] == 7
    fake.set("test-openrouter-key-1", "overloaded")
    fake.set("test-openrouter-key-2", "overloaded")
    result = run(["chat", "--no-stream", "--no-fallback", "hi"], env, tmp_path)
    assert result.returncode == 1 and "Overloaded" in result.stderr
    assert fake.count("test-gemini-key-1") == 0
    assert run(["chat", "--no-stream", "hi"], env, tmp_path).returncode == 0  # with fallback: gemini answers


def test_chat_verbose_shows_each_attempts_retry_time(fake: FakeUpstream, tmp_path: Path) -> None:
    env = fake_env(fake, gemini=2, openrouter=0, anthropic=0)
    fake.set("test-gemini-key-1", "rate_limit", retry_after=30)
    fake.set("test-gemini-key-2", "rate_limit", retry_after=45)
    result = run(["chat", "-v", "--no-stream", "hi"], env, tmp_path)
    assert result.returncode == 1
    # Both keys limited at once: the provider rests, until the later of the two times.
    assert "of 2 keys (gemini): 2 resting (the earliest back in 45.0 s; gemini rests as a whole" in result.stderr
    assert re.search(r"tried gemini gemini#1 …\w{4}: RateLimited 429, retry in 30\.0 s", result.stderr)
    assert re.search(r"tried gemini gemini#2 …\w{4}: RateLimited 429, retry in 45\.0 s", result.stderr)


# ----------------------------------------------------------------------------- status


def test_status_with_nothing_running_says_it_is_this_process_only(fake: FakeUpstream, tmp_path: Path) -> None:
    env = {**fake_env(fake, AI_PROVIDER="gemini"), "KEYWHEEL_PORT": str(free_port()), "COLUMNS": "120"}
    result = run(["status"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "this process only" in result.stdout and "keys (this process)" in result.stdout


def test_status_finds_the_local_gateway_and_reads_the_admin_key_from_dotenv(fake: FakeUpstream, tmp_path: Path) -> None:
    env = {**fake_env(fake, AI_PROVIDER="gemini"), "KEYWHEEL_ADMIN_KEY": ADMIN_KEY}
    served = start_gateway(env, tmp_path / "gateway.log")
    try:
        port = served.url.rsplit(":", 1)[1]
        body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).encode()
        request = urllib.request.Request(
            served.url + "/v1/chat/completions", body, {"content-type": "application/json"}
        )
        urllib.request.urlopen(request, timeout=10).close()
        folder = tmp_path / "app"
        folder.mkdir()
        # Only ./.env knows the admin key and the port: the same way every command reads it.
        (folder / ".env").write_text(f"KEYWHEEL_ADMIN_KEY={ADMIN_KEY}\nKEYWHEEL_PORT={port}\n")
        by_url = run(["status", "--url", served.url], {"COLUMNS": "120"}, folder)
        assert by_url.returncode == 0, by_url.stderr
        found = run(["status"], {"COLUMNS": "120"}, folder)
        assert found.returncode == 0, found.stderr
        for result in (by_url, found):
            assert "(live" in result.stdout
            row = re.search(r"gemini#1 …\w{4}\s+active\s+(\d+)\s+(\d+)", result.stdout)
            assert row and row.groups() == ("1", "1"), result.stdout
        (folder / ".env").write_text(f"KEYWHEEL_ADMIN_KEY=wrong-admin-key-0123456789\nKEYWHEEL_PORT={port}\n")
        refused = run(["status"], {}, folder)
        assert refused.returncode == 1 and "401" in refused.stderr and "KEYWHEEL_ADMIN_KEY" in refused.stderr
    finally:
        served.stop()


def test_status_watch_refreshes(fake: FakeUpstream, tmp_path: Path) -> None:
    served = start_gateway(fake_env(fake, AI_PROVIDER="gemini"), tmp_path / "gateway.log")
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "COLUMNS": "120"}
    watcher = subprocess.Popen(
        [*KEYWHEEL, "status", "--url", served.url, "--watch", "0.2"],
        cwd=tmp_path,
        env=measured(base),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        seen: list[str] = []
        sent = False
        deadline = time.monotonic() + 30
        body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}).encode()
        while time.monotonic() < deadline:
            line = watcher.stdout.readline()
            assert line, "".join(seen)
            seen.append(line)
            if len([s for s in seen if "(live" in s]) == 2 and not sent:
                sent = True
                request = urllib.request.Request(
                    served.url + "/v1/chat/completions", body, {"content-type": "application/json"}
                )
                urllib.request.urlopen(request, timeout=10).close()
            if re.search(r"gemini#1 …\w{4}\s+active\s+1\s+1", line):
                break
        else:
            pytest.fail("status --watch never showed the new request:\n" + "".join(seen))
        assert len([s for s in seen if "(live" in s]) >= 3
    finally:
        watcher.terminate()
        watcher.wait(10)
        served.stop()
