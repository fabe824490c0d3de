"""Sequential requests over one kept-alive connection, timing the first body byte and the last.

Used for time-to-first-byte / time-to-last-byte of streamed answers, to check that every
target answers correctly before it is loaded, and to time start-up.  Run on its own:

    python bench/stream_client.py http://127.0.0.1:8080/v1/chat/completions --stream -n 200 \
        -H 'Authorization: Bearer test-gateway-key'
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import fixtures


@dataclass(frozen=True)
class Request:
    url: str
    headers: Mapping[str, str]
    body: bytes
    stream: bool
    ok: Callable[[bytes, bool], bool]  # is this body a good answer?


@dataclass
class SeqResult:
    ttfb_s: list[float] = field(default_factory=list)
    total_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def median_ms(self, samples: list[float]) -> float | None:
        return statistics.median(samples) * 1000 if samples else None


class Client:
    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)

    def once(self, req: Request) -> tuple[int, bytes, float, float]:
        """Status, body, seconds to the first body byte, seconds to the last."""
        start = time.perf_counter()
        self.conn.request("POST", self.path, body=req.body, headers={"Content-Type": "application/json", **req.headers})
        resp = self.conn.getresponse()
        first = resp.read1(65536)
        ttfb = time.perf_counter() - start
        body = first + resp.read()
        return resp.status, body, ttfb, time.perf_counter() - start

    def close(self) -> None:
        self.conn.close()


def run(req: Request, count: int) -> SeqResult:
    result = SeqResult()
    client = Client(req.url)
    try:
        for _ in range(count):
            try:
                status, body, ttfb, total = client.once(req)
            except (OSError, http.client.HTTPException) as exc:
                result.failures.append(f"{type(exc).__name__}: {exc}")
                client.close()
                client = Client(req.url)
                continue
            if status != 200 or not req.ok(body, req.stream):
                result.failures.append(f"HTTP {status}: {body[:300]!r}")
                continue
            result.ttfb_s.append(ttfb)
            result.total_s.append(total)
    finally:
        client.close()
    return result


def first_good_answer(req: Request, alive: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``req`` gets a good answer; retries while the server is coming up.

    Connection errors and 5xx mean "not ready yet"; any other wrong answer fails at once,
    since waiting will not change it.
    """
    start = time.perf_counter()
    last = "no answer"
    while time.perf_counter() - start < timeout:
        if not alive():
            raise RuntimeError(f"the process exited before answering ({last})")
        client = Client(req.url, timeout=max(1.0, timeout - (time.perf_counter() - start)))
        try:
            status, body, _, _ = client.once(req)
            if status == 200 and req.ok(body, req.stream):
                return time.perf_counter() - start
            last = f"HTTP {status}: {body[:300]!r}"
            if status < 500:
                raise RuntimeError(f"wrong answer at start-up ({last})")
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        finally:
            client.close()
        time.sleep(0.02)
    raise RuntimeError(f"no good answer within {timeout:.0f} s ({last})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--dialect", choices=sorted(fixtures.DIALECTS), default="openai")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("-n", "--count", type=int, default=200)
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    args = parser.parse_args()
    dialect = fixtures.DIALECTS[args.dialect]
    headers = dict(h.split(":", 1) for h in args.header)
    req = Request(
        args.url, {k.strip(): v.strip() for k, v in headers.items()}, dialect.body(args.stream), args.stream, dialect.ok
    )
    result = run(req, args.count)
    print(
        json.dumps(
            {
                "ok": len(result.total_s),
                "failed": len(result.failures),
                "ttfb_p50_ms": result.median_ms(result.ttfb_s),
                "total_p50_ms": result.median_ms(result.total_s),
                "first_failures": result.failures[:3],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
