"""Every snippet in README.md runs here, taken from the README itself.

How each fenced block is run (one test per block, named ``README.md:<line>-<language>``):

- ``python``: written to a file and run with this venv's Python in an empty temporary folder
  (so no ``./.env`` is read), with an environment that points every provider's base URL at a
  ``FakeUpstream`` and holds fake keys (``GEMINI_API_KEY_1`` …).  A real ``keywheel serve``
  over the same fake runs with ``KEYWHEEL_GATEWAY_KEYS=my-gateway-key``; the one rewrite made
  to a snippet is the gateway's address: ``127.0.0.1:8787`` becomes that gateway's port.
  The block must exit 0, reach the upstream (or start its own ``FakeUpstream``), and leave no
  "Unclosed" resource warning (shown: ``-W default::ResourceWarning``) or traceback on stderr.
- ``sh``: each command line (``\\`` continuations joined, trailing ``  # comments`` cut) runs
  with the same environment plus ``KEYWHEEL_PORT`` set to the gateway's port, and the same
  address rewrite.  Leading ``NAME=value`` words become environment variables.
  ``keywheel serve …`` is started (on a free port, in place of any ``--port``; with
  ``--env-file /dev/null``), must answer ``/health``, and is stopped by its PID; every
  other ``keywheel …`` or ``curl …`` command must exit 0 (``curl`` gets ``--fail``), with
  stdin closed (so the interactive ``keywheel chat`` ends at once).
- ``dotenv``: ``...`` values become distinct fake keys, and the file must configure a wheel
  without errors.

A block or command that genuinely cannot run is listed in ``NOT_RUN`` (by the text of the line
or the program it calls) with the reason.  Anything else — a new language, or a command of
another program — fails here until it runs or is listed: new python blocks need nothing.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keywheel.config import read_env_file, settings_from_env
from keywheel.testing import FakeUpstream
from tests.gateway.conftest import Served, free_port, start_gateway
from tests.helpers import fake_env, measured

README = Path(__file__).resolve().parents[1] / "README.md"
BIN = Path(sys.executable).parent
README_GATEWAY = "127.0.0.1:8787"
README_GATEWAY_KEY = "my-gateway-key"

# Programs whose commands are not run, and why.
NOT_RUN_PROGRAMS = {
    "make": "`make run` / `make test` build the venv and run this very suite; CI runs them itself",
    "claude": "the interactive Claude Code CLI; the Claude Code tests run it against the gateway",
}
# Single command lines that are not run, and why.
NOT_RUN_LINES = {
    "keywheel demo": "the same demo `keywheel run` shows without keys; "
    "tests/test_cli.py::test_make_runs_demo_has_no_log_lines_and_fits_80_columns runs it (~7 s)",
    "keywheel keys add gemini < key.txt": "a shell redirection; tests/ops/test_admin_cli.py adds a key from stdin",
    "keywheel keys add gemini --from-env NEW_GEMINI_KEY": "needs a key in a variable; tests/ops/test_admin_cli.py "
    "adds one so",
}


@dataclass(frozen=True)
class Block:
    line: int
    language: str
    text: str

    @property
    def id(self) -> str:
        return f"README.md:{self.line}-{self.language or 'plain'}"


def readme_blocks() -> list[Block]:
    blocks = []
    lines = README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)```(\S*)\s*$", lines[i])
        if not match:
            i += 1
            continue
        indent, language, start = match.group(1), match.group(2), i + 1
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        blocks.append(Block(start, language, "\n".join(body) + "\n"))
        i += 1
    return blocks


BLOCKS = readme_blocks()


def test_the_readme_has_snippets_of_each_kind() -> None:
    """Guards the extraction itself: if it found nothing, every other test here would pass vacuously."""
    languages = {b.language for b in BLOCKS}
    assert {"python", "sh", "dotenv"} <= languages, languages
    assert sum(b.language == "python" for b in BLOCKS) >= 5


@pytest.fixture(scope="module")
def snippet_env(fake_server: FakeUpstream) -> dict[str, str]:
    env = fake_env(fake_server, gemini=2, openrouter=1, anthropic=1, KEYWHEEL_MAX_WAIT="3")
    env["AI_PROVIDER"] = "gemini"
    return env


@pytest.fixture(scope="module")
def readme_gateway(snippet_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    env = {**snippet_env, "KEYWHEEL_GATEWAY_KEYS": README_GATEWAY_KEY}
    served = start_gateway(env, tmp_path_factory.mktemp("readme-gateway") / "gateway.log")
    yield served
    served.stop()


def rewrite(text: str, served: Served) -> str:
    """The documented rewrite: the README's gateway address becomes the test gateway's."""
    return text.replace(README_GATEWAY, served.url.removeprefix("http://"))


def process_env(snippet_env: dict[str, str], tmp_path: Path, served: Served) -> dict[str, str]:
    return measured(
        {
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "HOME": str(tmp_path),
            "KEYWHEEL_PORT": served.url.rsplit(":", 1)[1],
            "OPENAI_AGENTS_DISABLE_TRACING": "1",  # never send traces anywhere
            **snippet_env,
        }
    )


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.language == "python"], ids=lambda b: b.id)
def test_python_snippet_runs(
    block: Block, snippet_env: dict[str, str], readme_gateway: Served, fake: FakeUpstream, tmp_path: Path
) -> None:
    script = tmp_path / "snippet.py"
    script.write_text(rewrite(block.text, readme_gateway))
    result = subprocess.run(
        [sys.executable, "-W", "default::ResourceWarning", str(script)],
        cwd=tmp_path,
        env=process_env(snippet_env, tmp_path, readme_gateway),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    report = f"{block.id}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"
    assert result.returncode == 0, report
    assert "Unclosed" not in result.stderr and "Traceback" not in result.stderr, report
    own_fake = "FakeUpstream(" in block.text  # a snippet about the fake itself starts its own
    assert fake.requests or own_fake, f"{block.id} reached no upstream"


def sh_commands(text: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", text)
    commands = []
    for raw in joined.splitlines():
        line = re.sub(r"\s{2,}#.*$", "", raw).strip()
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def split_command(line: str) -> tuple[dict[str, str], list[str]]:
    words = shlex.split(line)
    env: dict[str, str] = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return env, words


def not_run_reason(line: str) -> str | None:
    _, words = split_command(line)
    if line in NOT_RUN_LINES:
        return NOT_RUN_LINES[line]
    return NOT_RUN_PROGRAMS.get(words[0]) if words else None


def serve(args: list[str], env: dict[str, str], log_path: Path) -> None:
    """Start ``keywheel serve <args>`` on a free port (the README's own ``--port`` is replaced),
    wait for ``/health``, and stop it by its PID."""
    port = str(free_port())
    rest = list(args)
    if "--port" in rest:
        del rest[rest.index("--port") : rest.index("--port") + 2]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["keywheel", "--env-file", os.devnull, "serve", *rest, "--port", port],
            env={**env, "KEYWHEEL_PORT": port},
            cwd=log_path.parent,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.language == "sh"], ids=lambda b: b.id)
def test_sh_snippet_runs(block: Block, snippet_env: dict[str, str], readme_gateway: Served, tmp_path: Path) -> None:
    ran = 0
    for line in sh_commands(rewrite(block.text, readme_gateway)):
        if not_run_reason(line):
            continue
        extra, words = split_command(line)
        env = {**process_env(snippet_env, tmp_path, readme_gateway), **extra}
        assert words[0] in ("keywheel", "curl"), (
            f"{block.id}: no runner for {line!r}: run it in tests/test_readme.py or list it in NOT_RUN_* with a reason"
        )
        if words[0] == "curl":
            words = ["curl", "--fail", "--silent", "--show-error", *words[1:]]
        if words[:2] == ["keywheel", "serve"]:
            serve(words[2:], env, tmp_path / f"serve-{ran}.log")
        else:
            result = subprocess.run(
                words,
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            assert result.returncode == 0, f"{block.id}: {line}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        ran += 1
    listed = [line for line in sh_commands(block.text) if not_run_reason(line)]
    assert ran or listed, f"{block.id} has no command"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.language == "dotenv"], ids=lambda b: b.id)
def test_dotenv_snippet_configures_a_wheel(block: Block, tmp_path: Path) -> None:
    values = iter(range(1, 100))
    text = re.sub(r"=\.\.\.", lambda _: f"=test-readme-key-{next(values)}", block.text)
    path = tmp_path / "readme.env"
    path.write_text(text)
    variables = read_env_file(path)
    assert variables, block.id
    settings = settings_from_env(variables)
    assert settings.chain and all(settings.providers[name].keys for name in settings.chain)


def test_every_block_has_a_runner() -> None:
    runners = {"python", "sh", "dotenv"}
    unknown = [b.id for b in BLOCKS if b.language not in runners]
    assert not unknown, (
        f"README blocks no test runs: {unknown}; give them a runner in tests/test_readme.py, "
        "or a language it runs (python, sh, dotenv)"
    )


def test_commands_that_are_not_run_are_still_in_the_readme() -> None:
    """The exemption list stays honest: each listed line still exists."""
    lines = {line for b in BLOCKS if b.language == "sh" for line in sh_commands(b.text)}
    for line in NOT_RUN_LINES:
        assert line in lines, f"{line!r} is listed in NOT_RUN_LINES but no longer in the README"


def test_a_command_without_runner_or_reason_is_not_skipped() -> None:
    """The runner's own guard: only listed programs and lines are skipped; anything else must run."""
    lines = sh_commands("make run      # builds\nclaude\nexport A=1\nkeywheel demo\nFOO=1 keywheel chat hi\n")
    assert lines == ["make run", "claude", "export A=1", "keywheel demo", "FOO=1 keywheel chat hi"]
    assert [not_run_reason(line) is not None for line in lines] == [True, True, False, True, False]
    assert split_command(lines[4]) == ({"FOO": "1"}, ["keywheel", "chat", "hi"])
