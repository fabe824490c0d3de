"""What the fake upstream does with a request, per key: behaviour kinds, their
parameters, the per-key script, and the retry-timing signals of a 429.

A key's script is a permanent behaviour plus a FIFO queue of temporary ones
(``times=N``).  The queue plays first, in the order it was set; when it runs
dry the permanent behaviour applies again.  Setting a permanent behaviour
clears the key's queue.

Nothing here locks: :class:`BehaviourTable` is guarded by the owner's lock.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from types import MappingProxyType

_Number = (int, float)
_Maybe = type(None)

# kind -> {param name: (accepted types, default)}
KINDS: Mapping[str, Mapping[str, tuple[tuple[type, ...], object]]] = {
    "ok": {},
    "rate_limit": {"retry_after": ((*_Number, _Maybe), 1.0), "style": ((str, _Maybe), None)},
    "quota": {"retry_after": ((*_Number, _Maybe), None), "limit_source": ((str,), "openrouter_credits")},
    "invalid": {},
    # Anthropic's spend caps: shape "400" (a limit the organization set: "... regain access on
    # <until>") or "429" (the tier's monthly cap: a rate_limit_error without retry timing)
    "spend_limit": {"shape": ((str,), "400"), "until": ((str,), "2030-01-01 at 00:00 UTC")},
    "forbidden": {},
    "not_found": {},
    "server_error": {},
    "overloaded": {},
    "bad_request": {"field": ((str, _Maybe), None)},
    "context_too_long": {},
    "hang": {"seconds": (_Number, 30.0)},
    "break_stream": {"after": ((int,), 3)},
    "stream_error": {"after": ((int,), 3)},
    "slow_stream": {"interval": (_Number, 0.2)},
    # a stream that sends ``after`` content frames, then pauses ``seconds``, then goes on
    "stall_stream": {"after": ((int,), 1), "seconds": (_Number, 30.0)},
    # a 200 whose body (no declared length), or one event of whose stream, is ``size`` bytes
    "oversized": {"size": ((int,), 1024 * 1024)},
    "echo_key": {"part": ((str,), "ends"), "status": ((int,), 401), "where": ((str,), "status"), "after": ((int,), 1)},
}

# Faults of the wire and of misleading 200s, played by ``keywheel.testing.wire``:
#   reset         a TCP reset: before the first byte (after=None); with after=N, after N content
#                 events of a stream, or halfway through a non-streamed body
#   trickle       the whole answer, ``size`` bytes at a time, ``interval`` seconds apart
#   garbage       HTTP 200 whose JSON body (or SSE events) does not parse
#   html          HTTP 200 text/html: a proxy's or captive portal's page
#   error_200     HTTP 200 carrying the dialect's error object (OpenRouter: a failed choice);
#                 a stream whose first event is the dialect's error event
#   no_terminator a stream whose content all comes, then a clean end without the dialect's
#                 closing event(s); a non-streamed answer is whole
WIRE_FAULTS: Mapping[str, Mapping[str, tuple[tuple[type, ...], object]]] = {
    "reset": {"after": ((int, _Maybe), None)},
    "trickle": {"interval": (_Number, 0.02), "size": ((int,), 16)},
    "garbage": {},
    "html": {},
    "error_200": {},
    "no_terminator": {},
}
KINDS = {**KINDS, **WIRE_FAULTS}

#: Kinds answered with an HTTP error status before any reply is built.
ERROR_KINDS = frozenset(
    {
        "rate_limit",
        "quota",
        "spend_limit",
        "invalid",
        "forbidden",
        "not_found",
        "server_error",
        "overloaded",
        "bad_request",
        "context_too_long",
    }
)

#: How a 429 says when to come back.  "retry-info" is Gemini's body field;
#: the others are headers and are sent by every dialect when asked for.
RETRY_STYLES = frozenset(
    {"retry-after", "retry-after-ms", "http-date", "retry-info", "anthropic-reset", "openai-reset", "none"}
)
DEFAULT_RETRY_STYLE: Mapping[str, str] = {"anthropic": "retry-after", "gemini": "retry-info", "openai": "retry-after"}


@dataclass(frozen=True, slots=True)
class Behaviour:
    """One behaviour kind with its parameters, defaults filled in."""

    kind: str
    params: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def build(cls, kind: str, params: Mapping[str, object]) -> Behaviour:
        """Validate ``kind`` and ``params``; raise ``ValueError`` naming the problem."""
        spec = KINDS.get(kind)
        if spec is None:
            raise ValueError(f"unknown behaviour kind {kind!r}; expected one of {sorted(KINDS)}")
        unknown = set(params) - set(spec)
        if unknown:
            raise ValueError(f"behaviour {kind!r} takes no parameter(s) {sorted(unknown)}; it takes {sorted(spec)}")
        filled: dict[str, object] = {}
        for name, (types, default) in spec.items():
            value = params.get(name, default)
            if not isinstance(value, types) or isinstance(value, bool):
                raise ValueError(f"behaviour {kind!r}: {name}={value!r} has the wrong type")
            if isinstance(value, _Number) and value < 0:
                raise ValueError(f"behaviour {kind!r}: {name} must not be negative")
            filled[name] = value
        style = filled.get("style")
        if style is not None and style not in RETRY_STYLES:
            raise ValueError(f"rate_limit style {style!r} is not one of {sorted(RETRY_STYLES)}")
        return cls(kind, MappingProxyType(filled))

    def number(self, name: str) -> float:
        value = self.params[name]
        assert isinstance(value, _Number)
        return float(value)

    def optional_number(self, name: str) -> float | None:
        value = self.params.get(name)
        return float(value) if isinstance(value, _Number) else None

    def text(self, name: str) -> str | None:
        value = self.params.get(name)
        return value if isinstance(value, str) else None


OK = Behaviour("ok")


@dataclass(slots=True)
class _Temporary:
    behaviour: Behaviour
    remaining: int


@dataclass(slots=True)
class _Script:
    permanent: Behaviour = OK
    queue: deque[_Temporary] = field(default_factory=deque)


class BehaviourTable:
    """Per-key scripts.  Not thread-safe by itself: the owner holds a lock."""

    def __init__(self) -> None:
        self._scripts: dict[str, _Script] = {}

    def set(self, key: str, behaviour: Behaviour, times: int | None) -> None:
        script = self._scripts.setdefault(key, _Script())
        if times is None:
            script.permanent = behaviour
            script.queue.clear()
        elif times > 0:
            script.queue.append(_Temporary(behaviour, times))

    def take(self, key: str) -> Behaviour:
        """The behaviour for the next request carrying ``key`` (consumes one temporary use)."""
        script = self._scripts.get(key)
        if script is None:
            return OK
        if not script.queue:
            return script.permanent
        entry = script.queue[0]
        entry.remaining -= 1
        if entry.remaining <= 0:
            script.queue.popleft()
        return entry.behaviour

    def clear(self) -> None:
        self._scripts.clear()


def _plain(value: float) -> str:
    """``2`` for integral values, else the shortest float text (``1.5``)."""
    return str(int(value)) if value == int(value) else repr(value)


def go_duration(seconds: float) -> str:
    """OpenAI's ``x-ratelimit-reset-*`` format: ``12ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60)
    rest_text = _plain(round(rest, 3))
    return f"{int(minutes)}m{rest_text}s" if minutes else f"{rest_text}s"


def proto_duration(seconds: float) -> str:
    """google.protobuf.Duration in JSON: ``59s``, ``1.5s``."""
    return f"{_plain(round(seconds, 9))}s"


def retry_headers(style: str, retry_after: float | None, *, now: float | None = None) -> dict[str, str]:
    """Headers that carry ``retry_after`` in ``style`` (empty for body styles or no timing)."""
    if retry_after is None or style in ("none", "retry-info"):
        return {}
    wall = time.time() if now is None else now
    if style == "retry-after":
        return {"retry-after": _plain(retry_after)}
    if style == "retry-after-ms":
        return {"retry-after-ms": _plain(round(retry_after * 1000, 3))}
    if style == "http-date":
        # an HTTP date has whole seconds: round up so the client never comes back early
        return {"retry-after": formatdate(math.ceil(wall + retry_after), usegmt=True)}
    if style == "anthropic-reset":
        reset = datetime.fromtimestamp(math.ceil(wall + retry_after), UTC)
        return {"anthropic-ratelimit-requests-reset": reset.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if style == "openai-reset":
        return {"x-ratelimit-reset-requests": go_duration(retry_after)}
    raise ValueError(f"unknown retry style {style!r}")
