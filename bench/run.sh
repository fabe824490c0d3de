#!/usr/bin/env bash
# Benchmark entry point: installs what the benchmark needs if it is missing, then runs it.
#   bash bench/run.sh            full run (BENCH_SECONDS, BENCH_ROUNDS, BENCH_TARGETS, BENCH_SCENARIOS, ...)
#   bash bench/run.sh --smoke    every available target briefly, < 30 s
#   bash bench/run.sh --sections faultsoak    30 min under flipping faults (BENCH_FAULTSOAK_SECONDS; --smoke: 20 s)
# Installs: nginx, its njs module and wrk from Debian (root only), and LiteLLM into bench/.venv-litellm
# (skip with BENCH_SKIP_LITELLM_INSTALL=1; pick another version with BENCH_LITELLM_SPEC).
set -euo pipefail
cd "$(dirname "$0")/.."

python=.venv/bin/python
if [ ! -x "$python" ]; then
    echo "no dev venv at .venv: create it first (python3.11 -m venv .venv && .venv/bin/pip install -e '.[dev]')" >&2
    exit 1
fi

missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
[ -e /usr/lib/nginx/modules/ngx_http_js_module.so ] || missing+=(libnginx-mod-http-js)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing ${missing[*]}; install them as root: apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# Pinned so that runs months apart compare the same LiteLLM; ../shared/PERF-NOTES.md measured this one.
litellm_spec=${BENCH_LITELLM_SPEC:-litellm[proxy]==1.108.7}
if [ ! -x bench/.venv-litellm/bin/litellm ] && [ "${BENCH_SKIP_LITELLM_INSTALL:-0}" != 1 ]; then
    echo "installing $litellm_spec into bench/.venv-litellm (a few minutes, once)"
    python3 -m venv bench/.venv-litellm
    bench/.venv-litellm/bin/pip install -q "$litellm_spec"
fi

exec "$python" bench/harness.py "$@"
