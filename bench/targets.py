"""The things benchmarked, and how each is started and spoken to.

Every target but ``direct`` is a gateway in front of the same nginx stand-in; ``direct`` is
wrk at nginx itself, whose figures are the baseline the others' "added" latency is taken from.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fixtures
import procs
from stream_client import Request

HERE = Path(__file__).resolve().parent
LITELLM_VENV = HERE / ".venv-litellm"
GATEWAY_KEY = "test-gateway-key"
LITELLM_MASTER_KEY = "sk-bench-gateway-key"  # LiteLLM insists on the sk- prefix
ANTHROPIC_VERSION = {"anthropic-version": "2023-06-01"}


def upstream_keys(provider: str) -> list[str]:
    return [f"test-{provider}-key-{i}" for i in range(1, 5)]


@dataclass(frozen=True)
class Scenario:
    name: str
    dialect: str  # the API the client speaks to the target (fixtures.DIALECTS)
    stream: bool


SCENARIOS = {
    s.name: s
    for s in [
        Scenario("chat", "openai", stream=False),
        Scenario("stream", "openai", stream=True),
        Scenario("anthropic", "anthropic", stream=False),
        Scenario("anthropic-stream", "anthropic", stream=True),
        Scenario("gemini", "gemini", stream=False),
        Scenario("gemini-stream", "gemini", stream=True),
    ]
}


def make_request(base_url: str, scenario: Scenario, headers: dict[str, str], path: str | None = None) -> Request:
    dialect = fixtures.DIALECTS[scenario.dialect]
    return Request(
        url=base_url + (path or dialect.path(scenario.stream)),
        headers=headers,
        body=dialect.body(scenario.stream),
        stream=scenario.stream,
        ok=dialect.ok,
    )


class Target:
    """A gateway started per round as its own process on a free port."""

    name = ""
    dialects: frozenset[str] = frozenset({"openai"})
    start_timeout = 60.0

    def unavailable_reason(self) -> str | None:
        return None

    def command(self, port: int, upstream: str, workdir: Path) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def client_headers(self, scenario: Scenario) -> dict[str, str]:
        extra = ANTHROPIC_VERSION if scenario.dialect == "anthropic" else {}
        return {"Authorization": f"Bearer {GATEWAY_KEY}", **extra}

    def request(self, base_url: str, scenario: Scenario) -> Request | None:
        if scenario.dialect not in self.dialects:
            return None
        return make_request(base_url, scenario, self.client_headers(scenario))


class Direct(Target):
    """wrk straight at nginx, with the upstream's own paths and auth headers."""

    name = "direct"
    dialects = frozenset(fixtures.DIALECTS)
    PATHS = {"openai": "/api/v1/chat/completions"}

    def client_headers(self, scenario: Scenario) -> dict[str, str]:
        key = upstream_keys(scenario.dialect if scenario.dialect != "openai" else "openrouter")[0]
        if scenario.dialect == "anthropic":
            return {"x-api-key": key, **ANTHROPIC_VERSION}
        if scenario.dialect == "gemini":
            return {"x-goog-api-key": key}
        return {"Authorization": f"Bearer {key}"}

    def request(self, base_url: str, scenario: Scenario) -> Request | None:
        return make_request(base_url, scenario, self.client_headers(scenario), self.PATHS.get(scenario.dialect))


class Floor(Target):
    name = "floor"

    def command(self, port: int, upstream: str, _workdir: Path) -> tuple[list[str], dict[str, str]]:
        keys = [arg for key in upstream_keys("openrouter") for arg in ("--key", key)]
        cmd = [
            sys.executable,
            str(HERE / "floor_app.py"),
            "--port",
            str(port),
            "--upstream",
            f"{upstream}/api/v1",
            "--gateway-key",
            GATEWAY_KEY,
            *keys,
        ]
        return cmd, procs.child_env({})


class Keywheel(Target):
    name = "keywheel"
    dialects = frozenset(fixtures.DIALECTS)
    # BENCH_KEYWHEEL may name another build's executable, e.g. an older commit's, to compare the two.
    executable = Path(os.environ.get("BENCH_KEYWHEEL", Path(sys.prefix) / "bin" / "keywheel"))
    # keywheel reads "<provider>/<model>" as "that provider first", so the bare OpenRouter slug
    # (which has a slash of its own) would name a provider "openai".
    model = os.environ.get("BENCH_KEYWHEEL_MODEL", f"openrouter/{fixtures.OPENAI_MODEL}")
    # The operations switches: this target runs with metrics and the JSON log both off, the
    # keywheel-ops target with both on, in the same rounds (their CPU per request is compared).
    ops_env = {"KEYWHEEL_METRICS": "off", "KEYWHEEL_LOG_FORMAT": "text"}

    def unavailable_reason(self) -> str | None:
        if not self.executable.exists():
            return f"{self.executable} does not exist (pip install -e . in the dev venv)"
        try:
            probe = subprocess.run(
                [str(self.executable), "serve", "--help"],
                capture_output=True,
                text=True,
                timeout=30,
                env=procs.child_env({}),
            )
        except subprocess.TimeoutExpired:
            return "`keywheel serve --help` did not finish within 30 s"
        if probe.returncode != 0:
            last = (probe.stderr.strip() or probe.stdout.strip() or "no output").splitlines()[-1]
            return f"`keywheel serve` is not available yet ({last})"
        return None

    def command(self, port: int, upstream: str, workdir: Path) -> tuple[list[str], dict[str, str]]:
        env = {
            # serve's default store (SQLite), in a file of this run's own (not ./.keywheel)
            "KEYWHEEL_STATE": f"sqlite:///{(workdir / f'keywheel-state-{port}.db').resolve()}",
            "AI_PROVIDER": "openrouter",
            "OPENROUTER_BASE_URL": f"{upstream}/api/v1",
            "OPENROUTER_MODEL": fixtures.OPENAI_MODEL,
            "ENABLE_ANTHROPIC": "false",
            "ENABLE_GEMINI": "false",
            "ANTHROPIC_BASE_URL": upstream,
            "ANTHROPIC_MODEL": fixtures.ANTHROPIC_MODEL,
            "GEMINI_BASE_URL": upstream,
            "GEMINI_MODEL": fixtures.GEMINI_MODEL,
            "KEYWHEEL_GATEWAY_KEYS": GATEWAY_KEY,
        }
        for provider in ("openrouter", "anthropic", "gemini"):
            for i, key in enumerate(upstream_keys(provider), start=1):
                env[f"{provider.upper()}_API_KEY_{i}"] = key
        env.update(self.ops_env)
        env.update(extra_env(os.environ.get("BENCH_KEYWHEEL_ENV", "")))
        # --env-file: a .env in the working directory must not leak into the measured configuration.
        cmd = [str(self.executable), "--env-file", os.devnull, "serve", "--host", "127.0.0.1", "--port", str(port)]
        cmd += ["--workers", "1"]
        return cmd, procs.child_env(env)

    def request(self, base_url: str, scenario: Scenario) -> Request | None:
        req = super().request(base_url, scenario)
        if req is not None and scenario.dialect == "openai":
            req = dataclasses.replace(req, body=fixtures.openai_body(scenario.stream, self.model))
        return req


class KeywheelOps(Keywheel):
    """keywheel with ``GET /metrics`` counting and every log line in JSON (``KEYWHEEL_LOG_FORMAT=json``)."""

    name = "keywheel-ops"
    ops_env = {"KEYWHEEL_METRICS": "on", "KEYWHEEL_LOG_FORMAT": "json"}


def extra_env(text: str) -> dict[str, str]:
    """``BENCH_KEYWHEEL_ENV="A=1,B=2"``: more variables for both keywheel targets (after their own)."""
    pairs = (item.partition("=") for item in text.split(",") if item.strip())
    return {name.strip(): value.strip() for name, _, value in pairs if name.strip()}


class LiteLLM(Target):
    name = "litellm"
    start_timeout = 120.0
    executable = LITELLM_VENV / "bin" / "litellm"

    def unavailable_reason(self) -> str | None:
        if not self.executable.exists():
            return f"{self.executable} is missing (bash bench/run.sh installs it)"
        return None

    def client_headers(self, _scenario: Scenario) -> dict[str, str]:
        return {"Authorization": f"Bearer {LITELLM_MASTER_KEY}"}

    def command(self, port: int, upstream: str, workdir: Path) -> tuple[list[str], dict[str, str]]:
        config = workdir / "litellm-config.yaml"
        config.write_text(json.dumps(litellm_config(f"{upstream}/v1"), indent=2))  # JSON is valid YAML
        cmd = [
            str(self.executable),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ]
        env = {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # else it fetches a price list from the internet at start
            "LITELLM_LOG": "ERROR",  # also turns off uvicorn's access log
        }
        return cmd, procs.child_env(env)


def litellm_config(api_base: str) -> dict[str, Any]:
    """Four keys as four deployments of one model; every kind of logging off."""
    deployments = [
        {
            "model_name": fixtures.OPENAI_MODEL,
            "litellm_params": {"model": f"openai/{fixtures.OPENAI_MODEL}", "api_base": api_base, "api_key": key},
        }
        for key in upstream_keys("openrouter")
    ]
    return {
        "model_list": deployments,
        "router_settings": {"routing_strategy": "simple-shuffle", "num_retries": 0},
        "litellm_settings": {
            "set_verbose": False,
            "json_logs": False,
            "turn_off_message_logging": True,
            "request_timeout": 30,
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
        },
        "general_settings": {"master_key": LITELLM_MASTER_KEY, "disable_spend_logs": True, "disable_error_logs": True},
    }


ALL_TARGETS: list[Target] = [Direct(), Floor(), Keywheel(), KeywheelOps(), LiteLLM()]
