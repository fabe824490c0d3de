"""The quota section's arithmetic, apart from its processes so that a unit test can check it.

``goodput ÷ quota`` = the requests served ÷ what the keys' windows allow over the offered time:
``keys × limit × seconds ÷ window``.  The windows start empty when the load starts, and the load
lasts a whole number of windows, so a perfect gateway serves exactly that many (the fake upstream
refuses anything more, and keywheel keeps a 50 ms guard that may cost a request now and then).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Quota:
    keys: int
    limit: int  # requests per key per window
    window_s: float

    @property
    def per_second(self) -> float:
        """The aggregate quota in requests per second."""
        return self.keys * self.limit / self.window_s

    def allowed(self, seconds: float) -> float:
        """Requests the windows allow over ``seconds`` of load starting with every window empty.

        A sliding window lets ``limit`` through at once and the next ``limit`` ``window_s`` later,
        so over ``seconds`` each key gets ``limit`` per started window."""
        windows = -(-seconds // self.window_s)  # ceil: a started window can be spent whole
        return self.keys * self.limit * windows

    def offered(self, load_factor: float, seconds: float) -> int:
        """Requests offered at ``load_factor`` × the aggregate quota over ``seconds``."""
        return round(self.per_second * load_factor * seconds)

    def litellm_rpm(self) -> int:
        """The keys' quota as LiteLLM's per-deployment ``rpm`` (requests per minute)."""
        return round(self.limit * 60 / self.window_s)


def summarise(quota: Quota, seconds: float, counts: dict[str, int]) -> dict[str, float]:
    """A target's row: goodput ÷ quota and the counts as shares of what was offered.

    ``counts``: ``offered``, ``ok`` (answered 200), ``refused`` (429 to the client), ``failed``
    (any other answer or no answer), ``upstream`` (requests the fake upstream saw),
    ``upstream_429`` (of those, refused by its window)."""
    offered = counts["offered"]
    allowed = quota.allowed(seconds)
    return {
        "goodput_ratio": counts["ok"] / allowed if allowed else 0.0,
        "goodput_per_s": counts["ok"] / seconds if seconds else 0.0,
        "allowed": allowed,
        "ok_share": counts["ok"] / offered if offered else 0.0,
        "refused_share": counts["refused"] / offered if offered else 0.0,
        "upstream_429_share": counts["upstream_429"] / counts["upstream"] if counts["upstream"] else 0.0,
    }


def cpu_ratios(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Medians over rounds of Redis-mode ÷ memory-mode CPU per request (taken within each round)
    and of each mode's own figures.  Each round: ``memory_ms``, ``redis_ms``, ``redis2_ms`` and
    the matching ``*_rps``."""
    if not rounds:
        return {}
    out = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    out["redis_over_memory"] = statistics.median(r["redis_ms"] / r["memory_ms"] for r in rounds)
    out["two_over_one_rps"] = statistics.median(r["redis2_rps"] / r["redis_rps"] for r in rounds)
    return out
