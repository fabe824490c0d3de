"""``keywheel keys …`` and ``keywheel reload`` against a real ``keywheel serve`` over the fake upstream,
reading the gateway's URL and admin key as every command reads its configuration (``--env-file``)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from keywheel.cli import main
from keywheel.testing import FakeUpstream
from tests.gateway.conftest import ADMIN_KEY, Served, free_port
from tests.ops.test_reload import keys_of, serve, write_env


@pytest.fixture
def served(fake: FakeUpstream, tmp_path: Path) -> Iterator[tuple[Served, Path, Path]]:
    """A gateway over an env file with gemini keys 1 and 2, and the CLI's own env file pointing at it."""
    gateway_env = tmp_path / "gateway.env"
    write_env(gateway_env, fake, [1, 2])
    served = serve(tmp_path, gateway_env)
    cli_env = tmp_path / "cli.env"
    cli_env.write_text(f"KEYWHEEL_URL={served.url}\nKEYWHEEL_ADMIN_KEY={ADMIN_KEY}\n")
    try:
        yield served, gateway_env, cli_env
    finally:
        served.stop()


def cli(capsys: pytest.CaptureFixture[str], env: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["--env-file", str(env), *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_list_disable_enable_remove_add(
    served: tuple[Served, Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway, _, env = served
    fingerprints = sorted(keys_of(gateway.url))
    one, two = fingerprints

    code, out, _ = cli(capsys, env, "keys", "list")
    assert code == 0 and one in out and two in out and out.count("active") == 2
    code, out, _ = cli(capsys, env, "keys", "list", "--json")
    assert code == 0 and [k["key"] for k in json.loads(out)["keys"]] == [one, two]

    # by its head (gemini#1) or whole, "..." for "…"
    code, out, _ = cli(capsys, env, "keys", "disable", "gemini#1", "--reason", "rotating it out")
    assert code == 0 and f"{one}: disabled" in out
    assert keys_of(gateway.url)[one]["state"] == "disabled"
    assert keys_of(gateway.url)[one]["reason"] == "rotating it out"
    code, out, _ = cli(capsys, env, "keys", "enable", one.replace("…", "..."), "--json")
    assert code == 0 and json.loads(out) == {"key": one, "done": "enable"}
    assert keys_of(gateway.url)[one]["state"] == "active"
    code, _, _ = cli(capsys, env, "keys", "remove", "gemini#2")
    assert code == 0 and set(keys_of(gateway.url)) == {one}

    # add: the key from standard input, never echoed
    monkeypatch.setattr("sys.stdin", io.StringIO("test-gemini-key-7\n"))
    code, out, err = cli(capsys, env, "keys", "add", "gemini")
    assert code == 0 and "added gemini#" in out and "test-gemini-key-7" not in out + err
    # ... or from a variable named on the command line
    monkeypatch.setenv("NEW_GEMINI_KEY", "test-gemini-key-8")
    code, out, err = cli(capsys, env, "keys", "add", "gemini", "--from-env", "NEW_GEMINI_KEY", "--json")
    assert code == 0 and json.loads(out)["key"].startswith("gemini#") and "test-gemini-key-8" not in out + err
    assert len(keys_of(gateway.url)) == 3
    code, _, err = cli(capsys, env, "keys", "add", "gemini", "--from-env", "NEW_GEMINI_KEY")
    assert code == 1 and "already in gemini" in err  # the gateway refuses a key it has

    # what goes wrong, said plainly, with its exit code
    code, _, err = cli(capsys, env, "keys", "disable", "gemini#9")
    assert code == 1 and "no key 'gemini#9'" in err and one in err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = cli(capsys, env, "keys", "add", "gemini")
    assert code == 2 and "no key given" in err
    code, _, err = cli(capsys, env, "keys", "add", "gemini", "--from-env", "NO_SUCH_VARIABLE_HERE")
    assert code == 2 and "NO_SUCH_VARIABLE_HERE" in err
    wrong = env.with_name("wrong.env")
    wrong.write_text(f"KEYWHEEL_URL={gateway.url}\nKEYWHEEL_ADMIN_KEY=test-not-the-admin-key-0\n")
    code, _, err = cli(capsys, wrong, "keys", "list")
    assert code == 2 and "refused the admin key (401)" in err
    down = env.with_name("down.env")
    down.write_text(f"KEYWHEEL_ADMIN_KEY={ADMIN_KEY}\nKEYWHEEL_PORT={free_port()}\n")
    code, _, err = cli(capsys, down, "keys", "list")
    assert code == 3 and "no keywheel gateway answers at http://127.0.0.1:" in err
    code, _, err = cli(capsys, env, "keys", "list", "--env-file", str(env.with_name("missing.env")))
    assert code == 2 and "does not exist" in err
    assert "test-gemini-key" not in gateway.log()


def test_reload_from_the_command_line(
    served: tuple[Served, Path, Path], fake: FakeUpstream, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway, gateway_env, env = served
    write_env(gateway_env, fake, [1, 3])
    code, out, _ = cli(capsys, env, "reload")
    assert code == 0 and "1 key(s) kept, 1 added, 1 removed" in out
    assert "added: gemini#3" in out and "removed: gemini#2" in out
    assert sorted(fp.split(" ")[0] for fp in keys_of(gateway.url)) == ["gemini#1", "gemini#3"]

    write_env(gateway_env, fake, [1, 3], KEYWHEEL_TIMEOUT="-5")
    code, out, err = cli(capsys, env, "reload")
    assert code == 1 and "KEYWHEEL_TIMEOUT" in err and "the running one stays" in err
    code, out, _ = cli(capsys, env, "reload", "--json")
    assert code == 1 and out == ""
    write_env(gateway_env, fake, [1, 3])
    code, out, _ = cli(capsys, env, "reload", "--json")
    assert code == 0 and json.loads(out) == {
        "reloaded": True,
        "added": [],
        "removed": [],
        "kept": 2,
        "chain": ["gemini"],
    }
