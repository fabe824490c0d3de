"""The chaos matrix's spec: for every fault the fake upstream can play, what the caller
gets — non-streamed and streamed — and how many upstream requests it takes.

Read a row as: *"when the upstream does <fault> to <scope>, a non-streamed call gets
<outcome>, a streamed call gets <outcome>"*.  Scope ``key``: the fault hits only the key
keywheel tries first, once.  Scope ``provider``: every key of the provider asked first
(the one speaking the caller's dialect), for the whole call.

``but``: where one upstream's wire meaning differs, its outcome (for both modes).

Outcomes:

- ``served("first key")``: the answer of the one request made.
- ``served("other key")``: the first key failed; the provider's other key answered
  (2 upstream requests).  A key fault (``rests``) rests or disables the first key: it is
  not asked again.
- ``served("fallback", tries=n)``: the provider failed ``n`` times (over its keys); the
  next provider of the chain answered.
- ``failed(status, tries=n)``: an HTTP error in the caller's dialect after ``n`` requests.
- ``cut()``: a stream that had started: some of the answer, then the dialect's in-band
  error.  Never a second answer appended, so no failover (1 request).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, TypedDict

By = Literal["first key", "other key", "fallback"]


@dataclass(frozen=True)
class Served:
    by: By
    tries: int = 1  # requests the first provider took before the fallback answered

    def __str__(self) -> str:
        return f"served by the {self.by}" + (f" after {self.tries} tries" if self.by == "fallback" else "")


@dataclass(frozen=True)
class Failed:
    status: int
    tries: int = 1

    def __str__(self) -> str:
        return f"HTTP {self.status} in the caller's dialect after {self.tries} tries"


@dataclass(frozen=True)
class Cut:
    def __str__(self) -> str:
        return "part of the answer, then the in-band error"


Outcome = Served | Failed | Cut


def served(by: By, tries: int = 1) -> Served:
    return Served(by, tries)


def failed(status: int, tries: int = 1) -> Failed:
    return Failed(status, tries)


def cut() -> Cut:
    return Cut()


@dataclass(frozen=True)
class Fault:
    kind: str
    params: Mapping[str, object] = field(default_factory=dict)
    non_stream: Outcome = field(default_factory=lambda: served("first key"))
    stream: Outcome = field(default_factory=lambda: served("first key"))
    scope: Literal["key", "provider"] = "key"
    rests: bool = False  # a key fault: the key rests or is disabled and must not be asked again
    but: Mapping[str, Outcome] = field(default_factory=dict)  # upstream -> its outcome (both modes), where it differs

    def outcome(self, upstream: str, stream: bool) -> Outcome:
        return self.but.get(upstream) or (self.stream if stream else self.non_stream)

    @property
    def name(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.params.items() if k in ("after",))
        return f"{self.kind}({args})" if args else self.kind


class Both(TypedDict):
    non_stream: Outcome
    stream: Outcome


def both(outcome: Outcome) -> Both:
    return {"non_stream": outcome, "stream": outcome}


# fmt: off
FAULTS: list[Fault] = [
    # fault                                     scope         non-streamed / streamed
    Fault("ok",                                                **both(served("first key"))),
    # key faults: rotate to the next key at once, rest or disable this one
    Fault("rate_limit", {"retry_after": 30.0},                 **both(served("other key")), rests=True),
    Fault("quota",                                             **both(served("other key")), rests=True),
    Fault("spend_limit",                                       **both(served("other key")), rests=True),
    Fault("invalid",                                           **both(served("other key")), rests=True),
    Fault("forbidden",                                         **both(served("other key")), rests=True,
          but={"openrouter": failed(400)}),  # OpenRouter's 403 is moderation: content filtered, a 400
    # an upstream that quotes part of the key: a key fault like any 401, its text redacted (tests/security)
    Fault("echo_key", {"part": "middle"},                      **both(served("other key")), rests=True),
    # provider faults: retry once on the next key, then fail over
    Fault("server_error",                   scope="provider",  **both(served("fallback", tries=2))),
    Fault("overloaded",                     scope="provider",  **both(served("fallback", tries=2))),
    Fault("not_found",                      scope="provider",  **both(served("fallback", tries=1))),
    Fault("hang", {"seconds": 30.0},                           **both(served("other key"))),
    Fault("reset",                                             **both(served("other key"))),
    Fault("garbage",                                           **both(served("other key"))),
    Fault("html",                                              **both(served("other key"))),
    Fault("error_200",                                         **both(served("other key"))),
    # an answer over KEYWHEEL_MAX_RESPONSE_BYTES: the provider's fault, not the key's, and not worth a
    # retry there (the next answer would be as large): straight to the fallback
    Fault("oversized", {"size": 1024 * 1024}, non_stream=served("fallback", tries=1), stream=cut()),
    # request faults: would fail anywhere — returned at once (no provider here has a larger window)
    Fault("bad_request",                    scope="provider",  **both(failed(400))),
    Fault("context_too_long",               scope="provider",  **both(failed(400))),
    # faults after a stream has started: never mixed with a second answer
    Fault("break_stream", {"after": 3},     non_stream=served("other key"),  stream=cut()),
    Fault("stream_error", {"after": 3},     non_stream=served("other key"),  stream=cut()),
    Fault("reset", {"after": 2},            non_stream=served("other key"),  stream=cut()),
    Fault("no_terminator",                  non_stream=served("first key"),  stream=cut()),
    Fault("stall_stream", {"after": 1, "seconds": 30.0}, non_stream=served("first key"), stream=cut()),
    # slow but whole
    Fault("slow_stream", {"interval": 0.02},                   **both(served("first key"))),
    Fault("trickle", {"interval": 0.005, "size": 32},          **both(served("first key"))),
]
# fmt: on
