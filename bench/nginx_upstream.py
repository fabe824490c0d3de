"""The stand-in upstream: a private nginx (own prefix, pid, logs, temp dirs) on a free loopback port."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import fixtures
import procs
import stream_client

HERE = Path(__file__).resolve().parent / "nginx"
JS_MODULE = Path("/usr/lib/nginx/modules/ngx_http_js_module.so")
COOL_MARK = "-cool-"  # an OpenAI-format request whose Bearer key contains this gets a 429 (see nginx/bench.js)
COOL_RETRY_AFTER = 3600  # seconds, in that 429's retry-after: the key rests for the rest of the run
GEMINI_403 = json.dumps(
    {"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "Method doesn't allow unregistered callers"}}
)


def unavailable_reason() -> str | None:
    if not shutil.which("nginx"):
        return "nginx is not installed (bash bench/run.sh installs it)"
    if not JS_MODULE.exists():
        return f"{JS_MODULE} is missing (apt-get install libnginx-mod-http-js)"
    return None


def quote(text: str) -> str:
    """``text`` as a single-quoted nginx string; nginx turns these escapes back into the bytes."""
    if "$" in text:
        raise ValueError("a fixture contains '$', which nginx would expand as a variable")
    escaped = text.replace("\\", "\\\\").replace("'", "\\'").replace("\r", "\\r").replace("\n", "\\n")
    return f"'{escaped}'"


def render(prefix: Path, port: int) -> str:
    values = {
        "JS_MODULE": str(JS_MODULE),
        "PREFIX": str(prefix),
        "CONF_DIR": str(prefix),
        "PORT": str(port),
        "OPENAI_JSON": quote(fixtures.openai_chat()),
        "OPENAI_STREAM": quote(fixtures.openai_stream()),
        "ANTHROPIC_JSON": quote(fixtures.anthropic_message()),
        "ANTHROPIC_STREAM": quote(fixtures.anthropic_stream()),
        "GEMINI_JSON": quote(fixtures.gemini_response()),
        "GEMINI_STREAM": quote(fixtures.gemini_stream()),
        "GEMINI_403": quote(GEMINI_403),
        "OPENROUTER_KEY": quote(fixtures.openrouter_key()),
        "OPENROUTER_429": quote(fixtures.openrouter_429()),
        "COOL_RETRY_AFTER": str(COOL_RETRY_AFTER),
    }
    text = (HERE / "nginx.conf.template").read_text()
    for name, value in values.items():
        text = text.replace(f"@{name}@", value)
    return text


def start(prefix: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Write the config under ``prefix`` and start nginx in the foreground; return it and its port."""
    prefix.mkdir(parents=True, exist_ok=True)
    prefix.chmod(0o755)  # run as root, nginx's workers are 'nobody' and must reach their temp dirs
    port = procs.free_port()
    shutil.copy(HERE / "bench.js", prefix / "bench.js")
    conf = prefix / "nginx.conf"
    conf.write_text(render(prefix, port))
    base = ["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx rejected its config:\n{check.stderr}")
    proc = procs.spawn([*base, "-g", "daemon off;"], env=None, log=prefix / "nginx.out")
    return proc, port


def wait_ready(proc: subprocess.Popen[bytes], port: int, timeout: float = 10.0) -> float:
    """Seconds until the stand-in on ``port`` answers a chat request correctly."""
    req = stream_client.Request(
        url=f"http://127.0.0.1:{port}/api/v1/chat/completions",
        headers={"Authorization": "Bearer test-openrouter-key-1"},
        body=fixtures.openai_body(False),
        stream=False,
        ok=fixtures.DIALECTS["openai"].ok,
    )
    return stream_client.first_good_answer(req, lambda: proc.poll() is None, timeout)
