"""One LiteLLM replica for the quota section: ``litellm.Router`` with an ``rpm`` per deployment on Redis.

Run by ``quota.py`` with ``bench/.venv-litellm``'s Python (LiteLLM is not in the dev venv), once
per replica.  The router has the keys as deployments of one model, each with ``rpm``, routing
``usage-based-routing-v2`` (the strategy that enforces ``rpm`` before a call, counting in Redis
when ``redis_host``/``redis_port`` are given), every other setting at LiteLLM's default.  It
prints ``READY``, waits for ``GO <epoch>`` on stdin (so replicas start together), offers its
share (``--index`` of ``--replicas``) of ``--rate`` calls per second for ``--seconds`` from then,
and prints one ``BENCH_JSON {...}`` line:
``offered``, ``ok``, ``refused`` (a 429 from the router: its own rpm check or the upstream's),
``failed`` (anything else) and the first failure.

    bench/.venv-litellm/bin/python bench/quota_litellm.py --api-base http://127.0.0.1:P/v1 \\
        --keys k1,k2 --rpm 120 --redis-port 6390 --rate 16 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "hi"}]


def router(args: argparse.Namespace) -> Any:
    import litellm

    litellm.suppress_debug_info = True
    litellm.turn_off_message_logging = True
    litellm.callbacks, litellm.success_callback, litellm.failure_callback = [], [], []
    model_list = [
        {
            "model_name": MODEL,
            "litellm_params": {"model": f"openai/{MODEL}", "api_base": args.api_base, "api_key": key, "rpm": args.rpm},
        }
        for key in args.keys.split(",")
    ]
    return litellm.Router(
        model_list=model_list,
        routing_strategy="usage-based-routing-v2",
        redis_host="127.0.0.1",
        redis_port=args.redis_port,
        timeout=30,
    )


async def offer(rt: Any, args: argparse.Namespace, start_at: float) -> dict[str, Any]:
    """The whole load's calls number ``index``, ``index + replicas``, ... (round-robin over the
    replicas, as the client of keywheel's replicas does), each at its time ``n / rate``."""
    counts: dict[str, Any] = {"offered": 0, "ok": 0, "refused": 0, "failed": 0, "first_failure": None}

    async def one() -> None:
        try:
            await rt.acompletion(model=MODEL, messages=MESSAGES, max_tokens=16)
            counts["ok"] += 1
        except Exception as exc:  # LiteLLM's errors carry status_code; a 429 is a refusal
            if getattr(exc, "status_code", None) == 429:
                counts["refused"] += 1
            else:
                counts["failed"] += 1
                counts["first_failure"] = counts["first_failure"] or f"{type(exc).__name__}: {exc}"[:300]

    await asyncio.sleep(max(0.0, start_at - time.time()))
    began, tasks = time.monotonic(), []
    mine = range(args.index, round(args.rate * args.seconds), args.replicas)
    for n in mine:
        await asyncio.sleep(max(0.0, began + n / args.rate - time.monotonic()))
        tasks.append(asyncio.create_task(one()))
    counts["offered"] = len(mine)
    await asyncio.gather(*tasks)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--keys", required=True)
    parser.add_argument("--rpm", type=int, required=True)
    parser.add_argument("--redis-port", type=int, required=True)
    parser.add_argument("--rate", type=float, required=True, help="calls per second over all replicas")
    parser.add_argument("--index", type=int, default=0, help="this replica's number, from 0")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args()
    rt = router(args)
    print("READY", flush=True)
    line = sys.stdin.readline().split()
    start_at = float(line[1]) if len(line) == 2 and line[0] == "GO" else time.time()
    counts = asyncio.run(offer(rt, args, start_at))
    print("BENCH_JSON " + json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
