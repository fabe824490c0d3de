"""The rule book as data: state × outcome → state, one row per rule.

Each :class:`Case` gives a key's state, its fellow keys' states and its provider's state before,
an outcome (an upstream error, ``None`` for a success, or ``"abandoned"`` / ``"answered"``) at
``NOW``, and every state after.  ``tests/state/test_rules.py`` runs the table against the pure
:func:`keywheel.state.rules.apply` and against each store (a factory per store), so a new store
(SQLite, Redis/Lua) proves it applies exactly the same rules by passing the same table.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from keywheel.errors import (
    BadRequest,
    KeyInvalid,
    ModelNotFound,
    Overloaded,
    QuotaExhausted,
    RateLimited,
    ServerError,
    Timeout,
    UpstreamError,
)
from keywheel.state.rules import (
    ACTIVE,
    COOLING,
    DISABLED,
    INVALID,
    NEVER,
    OPERATOR,
    QUOTA,
    RATE_LIMITED,
    Breaker,
    BreakerPolicy,
    KeyState,
    ProviderState,
    Rules,
    spend_cap_reason,
)
from keywheel.state.windows import next_midnight

NOW = 1_800_000_000.0  # epoch seconds
RULES = Rules(breaker=BreakerPolicy(failures=3, cooloff=5.0, cooloff_max=12.0, trial_timeout=30.0))
KEY = "k0"  # the fingerprint of the key the outcome is about; its fellows are k1, k2, ...

Outcome = UpstreamError | None | Literal["abandoned", "answered"]


def _caused(k: KeyState) -> KeyState:
    """``k`` with the machine-readable cause its reason implies (unless one was given)."""
    if k.cause or k.state == ACTIVE:
        return k
    for prefix, cause in (
        ("rate limited", RATE_LIMITED),
        ("quota", QUOTA),
        ("out of credit", QUOTA),
        ("invalid", INVALID),
    ):
        if k.reason.startswith(prefix):
            return replace(k, cause=cause)
    return replace(k, cause=OPERATOR)


def key(**changes: object) -> KeyState:
    return _caused(KeyState(KEY, **changes))  # type: ignore[arg-type]


def cooling(until: float, reason: str = "rate limited", **changes: object) -> KeyState:
    return _caused(KeyState(KEY, COOLING, until, reason, **changes))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Case:
    name: str
    before: KeyState
    outcome: Outcome
    after: KeyState
    provider: ProviderState = ProviderState()
    provider_after: ProviderState | None = None  # None: unchanged
    others: tuple[KeyState, ...] = ()  # fellow keys' states (their fingerprints are k1, k2, ...)
    others_after: tuple[KeyState, ...] | None = None  # None: unchanged
    extra: dict[str, object] = field(default_factory=dict)
    groups: tuple[str, ...] = ()  # quota group of the key, then of each fellow ("" or absent: its own)


def _sourced(error: QuotaExhausted, source: str) -> QuotaExhausted:
    error.source = source  # as the OpenAI-format adapter sets it from a 402's metadata.limit_source
    return error


def fellow(i: int, **changes: object) -> KeyState:
    return _caused(KeyState(f"k{i}", **changes))  # type: ignore[arg-type]


HALF_OPEN_TRIAL = Breaker("half-open", 3, NOW + 30.0, 5.0, KEY)
# Gemini's daily quotas reset at Pacific midnight; a store computes it on its own clock.
DAY_TZ = "America/Los_Angeles"
MIDNIGHT = next_midnight(NOW, DAY_TZ)
GROUP_REASON = "quota exhausted: daily quota of its group: per day"


def _spend_cap(message: str) -> RateLimited:
    """Anthropic's 429 ``rate_limit_error`` without any retry timing, as its adapter marks it."""
    error = RateLimited(message, status=429)
    error.spend_cap = True
    return error


CAPPED = spend_cap_reason("cap")


def per_day() -> QuotaExhausted:
    """Gemini's ``PerDay`` 429, as its adapter classifies it (the reset on the real clock: a store
    recomputes it on its own)."""
    error = QuotaExhausted("per day", status=429, retry_after=MIDNIGHT - NOW)
    error.daily = True
    return error


CASES: list[Case] = [
    # --- successes
    Case("success leaves an active key as it is", key(), None, key(), others=(fellow(1),)),
    Case("success resets the backoff", key(backoff=8.0), None, key(backoff=0.0)),
    Case("late success leaves a rest alone", cooling(NOW + 9), None, cooling(NOW + 9)),
    # --- rate limits on a key
    Case(
        "rate limit with a retry time rests exactly that long",
        key(),
        RateLimited("slow down", retry_after=2.0),
        cooling(NOW + 2.0, last_rate_limited=NOW),
        others=(fellow(1),),
    ),
    Case(
        "a later, shorter rate limit never shortens a rest",
        cooling(NOW + 10.0, last_rate_limited=NOW - 1),
        RateLimited("b", retry_after=2.0),
        cooling(NOW + 10.0, last_rate_limited=NOW),
        others=(fellow(1),),
    ),
    Case(
        "a later, longer rate limit extends a rest",
        cooling(NOW + 10.0),
        RateLimited("c", retry_after=20.0),
        cooling(NOW + 20.0, last_rate_limited=NOW),
        others=(fellow(1),),
    ),
    Case(
        "no retry time: the first rest is 1 s",
        key(),
        RateLimited("no timing"),
        cooling(NOW + 1.0, backoff=1.0, last_rate_limited=NOW),
        others=(fellow(1),),
    ),
    Case(
        "no retry time: the rest doubles",
        key(backoff=4.0),
        RateLimited("no timing"),
        cooling(NOW + 8.0, backoff=8.0, last_rate_limited=NOW),
        others=(fellow(1),),
    ),
    Case(
        "no retry time: the rest stops at 60 s",
        key(backoff=32.0),
        RateLimited("no timing"),
        cooling(NOW + 60.0, backoff=60.0, last_rate_limited=NOW),
        others=(fellow(1),),
    ),
    Case(
        "no retry time at the cap stays at 60 s",
        key(backoff=60.0),
        RateLimited("no timing"),
        cooling(NOW + 60.0, backoff=60.0, last_rate_limited=NOW),
        others=(fellow(1),),
    ),
    Case(
        "a disabled key stays disabled when a late 429 comes",
        key(state=DISABLED, reason="invalid key: x"),
        RateLimited("late", retry_after=5.0),
        key(state=DISABLED, reason="invalid key: x", last_rate_limited=NOW),
        others=(fellow(1),),
    ),
    # --- a spend cap in disguise (Anthropic's 429 without timing, on every key)
    Case(
        "every live key answered 429 without timing, the last a possible spend cap: all out as quota",
        key(),
        _spend_cap("cap"),
        key(state=DISABLED, reason=CAPPED, cause=QUOTA, backoff=1.0, last_rate_limited=NOW),
        others=(
            fellow(1, state=COOLING, until=NOW + 1.0, reason="rate limited", backoff=1.0, last_rate_limited=NOW - 2),
            fellow(2, state=DISABLED, reason="invalid key: x"),
        ),
        others_after=(
            fellow(1, state=DISABLED, reason=CAPPED, cause=QUOTA, backoff=1.0, last_rate_limited=NOW - 2),
            fellow(2, state=DISABLED, reason="invalid key: x"),
        ),
    ),
    Case(
        "a possible spend cap while a fellow's last 429 had timing: provider throttling as usual",
        key(),
        _spend_cap("cap"),
        key(),
        others=(fellow(1, state=COOLING, until=NOW + 3.0, reason="rate limited", last_rate_limited=NOW - 1),),
        others_after=(fellow(1),),
        provider_after=ProviderState(throttled_until=NOW + 1.0),
    ),
    Case(
        "a possible spend cap on one key of several: a rate limit with backoff",
        key(),
        _spend_cap("cap"),
        cooling(NOW + 1.0, backoff=1.0, last_rate_limited=NOW),
        others=(fellow(1, backoff=2.0),),
    ),
    # --- provider-level throttling
    Case(
        "every live key limited within 5 s: the provider rests, the keys are not punished",
        key(backoff=2.0),
        RateLimited("account limit", retry_after=3.0),
        key(),
        others=(
            fellow(1, state=COOLING, until=NOW + 4.0, reason="rate limited", backoff=1.0, last_rate_limited=NOW - 4.9),
            fellow(2, state=DISABLED, reason="invalid key: x"),
        ),
        others_after=(fellow(1), fellow(2, state=DISABLED, reason="invalid key: x")),
        provider_after=ProviderState(throttled_until=NOW + 3.0),
    ),
    Case(
        "throttling: a provider rest already longer is kept",
        key(),
        RateLimited("account limit", retry_after=1.0),
        key(),
        provider=ProviderState(throttled_until=NOW + 7.0),
        others=(fellow(1, last_rate_limited=NOW - 1.0),),
        others_after=(fellow(1),),
        provider_after=ProviderState(throttled_until=NOW + 7.0),
    ),
    Case(
        "a fellow limited more than 5 s ago: no throttling, the key rests",
        key(),
        RateLimited("x", retry_after=3.0),
        cooling(NOW + 3.0, last_rate_limited=NOW),
        others=(fellow(1, last_rate_limited=NOW - 5.5),),
    ),
    Case(
        "a lone live key is never provider throttling",
        key(),
        RateLimited("x", retry_after=3.0),
        cooling(NOW + 3.0, last_rate_limited=NOW),
        others=(fellow(1, state=DISABLED, reason="off", last_rate_limited=NOW),),
    ),
    # --- quota, invalid keys
    Case(
        "OpenRouter 402 in-flight budget rests the key for its retry time (transient)",
        key(),
        RateLimited("In-flight budget exceeded", status=402, retry_after=3.0),
        cooling(NOW + 3.0, last_rate_limited=NOW),
    ),
    Case(
        "OpenRouter 402 key limit disables the key, the limit named (a credit reading sets its reset)",
        key(),
        _sourced(QuotaExhausted("Key limit exceeded", status=402), "openrouter_key_limit"),
        key(state=DISABLED, reason="out of credit or quota: Key limit exceeded [openrouter_key_limit]", cause=QUOTA),
    ),
    Case(
        "OpenRouter 402 account credits disables the key, the limit named",
        key(),
        _sourced(QuotaExhausted("Insufficient credits", status=402), "openrouter_credits"),
        key(state=DISABLED, reason="out of credit or quota: Insufficient credits [openrouter_credits]", cause=QUOTA),
    ),
    Case(
        "Anthropic spend limit with a regain date rests the key until then (a key fault)",
        key(),
        QuotaExhausted("You have reached your specified API usage limits.", status=400, retry_after=86400.0),
        cooling(NOW + 86400.0, "quota exhausted: You have reached your specified API usage limits.", cause=QUOTA),
    ),
    Case(
        "quota with a known reset rests the key until then",
        key(),
        QuotaExhausted("daily quota", retry_after=3600.0),
        cooling(NOW + 3600.0, "quota exhausted: daily quota"),
    ),
    Case(
        "out of credit with no reset disables the key",
        key(),
        QuotaExhausted("Insufficient credits", status=402),
        key(state=DISABLED, reason="out of credit or quota: Insufficient credits"),
    ),
    Case(
        "an invalid key is disabled",
        cooling(NOW + 5),
        KeyInvalid("API key not valid", status=401),
        key(state=DISABLED, reason="invalid key: API key not valid"),
    ),
    # --- key groups: a daily quota is the project's
    Case(
        "a daily quota rests every live key of the group until the reset; other groups serve on",
        key(),
        per_day(),
        cooling(MIDNIGHT, "quota exhausted: per day"),
        others=(
            fellow(1),
            fellow(2, state=COOLING, until=NOW + 5.0, reason="rate limited", last_rate_limited=NOW - 1),
            fellow(3, state=DISABLED, reason="invalid key: x"),
            fellow(4),
        ),
        others_after=(
            fellow(1, state=COOLING, until=MIDNIGHT, reason=GROUP_REASON, cause=QUOTA),
            fellow(2, state=COOLING, until=MIDNIGHT, reason=GROUP_REASON, cause=QUOTA, last_rate_limited=NOW - 1),
            fellow(3, state=DISABLED, reason="invalid key: x"),
            fellow(4),
        ),
        groups=("proj-a", "proj-a", "proj-a", "proj-a", "proj-b"),
    ),
    Case(
        "a daily quota never shortens a fellow's longer rest",
        key(),
        per_day(),
        cooling(MIDNIGHT, "quota exhausted: per day"),
        others=(fellow(1, state=COOLING, until=MIDNIGHT + 60, reason="quota exhausted: other"),),
        groups=("proj-a", "proj-a"),
    ),
    Case(
        "a daily quota on an ungrouped key rests that key only",
        key(),
        per_day(),
        cooling(MIDNIGHT, "quota exhausted: per day"),
        others=(fellow(1),),
    ),
    Case(
        "a quota that is not daily rests the key only, even in a group",
        key(),
        QuotaExhausted("tier cap", retry_after=600.0),
        cooling(NOW + 600.0, "quota exhausted: tier cap"),
        others=(fellow(1),),
        groups=("proj-a", "proj-a"),
    ),
    # --- faults that leave the key alone; the breaker
    Case(
        "a provider fault counts for the breaker, not against the key",
        key(),
        ServerError("boom", status=500),
        key(),
        provider_after=ProviderState(breaker=Breaker("closed", 1)),
    ),
    Case(
        "the third provider fault in a row opens the breaker",
        key(),
        Timeout("slow"),
        key(),
        provider=ProviderState(breaker=Breaker("closed", 2)),
        provider_after=ProviderState(breaker=Breaker("open", 3, NOW + 5.0, 5.0)),
    ),
    Case(
        "a success closes the breaker and forgets the count",
        key(),
        None,
        key(),
        provider=ProviderState(breaker=Breaker("closed", 2)),
        provider_after=ProviderState(),
    ),
    Case(
        "a failed trial reopens for twice as long",
        key(),
        Overloaded("529", status=529),
        key(),
        provider=ProviderState(breaker=HALF_OPEN_TRIAL),
        provider_after=ProviderState(breaker=Breaker("open", 4, NOW + 10.0, 10.0)),
    ),
    Case(
        "a trial that met a key fault told nothing: the next request is the trial",
        key(),
        RateLimited("this key", retry_after=60.0),
        cooling(NOW + 60.0, last_rate_limited=NOW),
        provider=ProviderState(breaker=HALF_OPEN_TRIAL),
        provider_after=ProviderState(breaker=Breaker("open", 3, NOW, 5.0)),
        others=(fellow(1),),
    ),
    Case(
        "a cancelled trial told nothing",
        key(),
        "abandoned",
        key(),
        provider=ProviderState(breaker=HALF_OPEN_TRIAL),
        provider_after=ProviderState(breaker=Breaker("open", 3, NOW, 5.0)),
    ),
    Case(
        "a stream's first event closes the breaker",
        key(),
        "answered",
        key(),
        provider=ProviderState(breaker=HALF_OPEN_TRIAL),
        provider_after=ProviderState(),
    ),
    Case(
        "a bad request neither counts nor resets",
        key(),
        BadRequest("400", status=400),
        key(),
        provider=ProviderState(breaker=Breaker("closed", 2)),
    ),
    Case(
        "a missing model says nothing of the provider",
        key(),
        ModelNotFound("404", status=404),
        key(),
        provider=ProviderState(breaker=Breaker("closed", 2)),
    ),
    Case(
        "a late fault while open does not extend the cool-off",
        key(),
        ServerError("late", status=502),
        key(),
        provider=ProviderState(breaker=Breaker("open", 3, NOW + 1.0, 5.0)),
        provider_after=ProviderState(breaker=Breaker("open", 4, NOW + 1.0, 5.0)),
    ),
]

assert len({c.name for c in CASES}) == len(CASES), "case names are ids: keep them unique"
assert all(k.state in (ACTIVE, COOLING, DISABLED) for c in CASES for k in (c.before, c.after, *c.others))
assert NEVER < NOW
