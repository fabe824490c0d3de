"""The rule book of keys and providers: pure functions of (state, outcome, now).

Nothing here keeps state, reads a clock or takes a lock.  A store (:mod:`keywheel.state.memory`,
later SQLite or Redis) keeps the states, and moves them only through these functions, so every
store applies exactly the same rules.  Times are wall-clock epoch seconds (``time.time()``), which
processes and machines can share; ``now`` is always an argument.

Each key moves through::

    active ──rate limited──▶ cooling(until) ──time passes──▶ active
    active ──invalid / out of credit──▶ disabled(reason) ──enable()──▶ active

- a rate limit with a retry time rests the key exactly that long; without one it rests
  1 s, 2 s, 4 s … up to 60 s (a success starts the doubling again at 1 s);
- a later rate limit extends a rest and never shortens it;
- every live key of a provider limited within 5 s is provider-level throttling (the account or
  IP): the provider rests, and its keys are not punished (rests and backoffs undone) — unless the
  limit is a spend cap in disguise: when the 429 that completes the set is one its adapter marks
  as a possible spend cap (``RateLimited.spend_cap``: Anthropic's ``rate_limit_error`` without
  any retry timing) and every other limited key's last 429 came without timing too (its backoff
  is still running), every live key is taken out as out of quota (disabled, cause ``quota``, the
  provider not rested) until a probe that can see credit, or an operator, brings it back;
- out of quota with a known reset rests the key until then; without one it disables the key;
- a *daily* quota (Gemini's ``PerDay``) belongs to the key's project: every key of the key's
  quota group (``<P>_API_KEY_<N>_GROUP``; an ungrouped key is its own group) rests until the
  reset too (:attr:`Changes.group_until`, applied to each with :func:`group_rest`);
- an invalid key is disabled until an operator enables it.

The provider as a whole has a circuit breaker (Envoy's outlier detection, per provider rather
than per host)::

    closed ──N consecutive provider faults──▶ open(until) ──cool-off over, next request──▶ half-open(trial)
    half-open ──trial succeeds──▶ closed        half-open ──trial fails──▶ open(until, cool-off × 2)

Provider faults are 5xx, 529/503, timeouts and connection errors, over any of the provider's
keys; key faults (429, 401/403, 402), request faults (400) and a missing model neither count nor
reset; any success closes it and resets the count.

The whole book is :func:`apply` — ``(key, group, provider, outcome, now) → Changes`` — and
:func:`breaker_admit` for the breaker's say before a request.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from keywheel.errors import KeyInvalid, QuotaExhausted, RateLimited, UpstreamError

ACTIVE, COOLING, DISABLED = "active", "cooling", "disabled"
#: A key's ``cause``: what put it out of rotation, which decides what may bring it back.
#: "invalid" (a free probe that accepts the key), "quota" (credit seen, a known reset passing, or a
#: generating probe), "operator" (only an operator), "rate_limited" and "throttled" (the rest's end).
INVALID, QUOTA, OPERATOR, RATE_LIMITED, REMOVED = "invalid", "quota", "operator", "rate_limited", "removed"
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

BACKOFF_START = 1.0  # first rest when the provider gave no retry time
BACKOFF_CAP = 60.0
THROTTLE_WINDOW = 5.0  # every live key rate limited within this many seconds = provider-level throttling
NEVER = float("-inf")


# ------------------------------------------------------------------ the breaker


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """The numbers of a provider's circuit breaker (``KEYWHEEL_BREAKER_*``)."""

    failures: int = 5  # consecutive provider faults that open it; 0 turns the breaker off
    cooloff: float = 5.0  # the first cool-off; doubled after each failed trial ...
    cooloff_max: float = 60.0  # ... up to this
    trial_timeout: float = 120.0  # a trial that has not reported by then is presumed lost: another may go


@dataclass(frozen=True, slots=True)
class Breaker:
    """One provider's breaker state.  Immutable: the transitions return a new value."""

    state: str = CLOSED  # closed | open | half-open
    failures: int = 0  # consecutive provider faults (a success resets it)
    until: float = 0.0  # open: nothing goes before this; half-open: the trial's lease ends then
    cooloff: float = 0.0  # the cool-off of the current opening (0 while closed)
    trial: str = ""  # half-open: fingerprint of the key carrying the trial


BreakerOutcome = Literal["success", "failure", "inconclusive"]
CLOSED_BREAKER = Breaker()


def breaker_admit(b: Breaker, now: float, policy: BreakerPolicy, key: str) -> tuple[Breaker, float]:
    """May a request on the key with fingerprint ``key`` go to the provider at ``now``?

    ``(new state, 0.0)`` to go ahead — when the cool-off is over the request is the
    half-open trial — or ``(state, seconds)`` until the breaker lets one through."""
    if b.state == CLOSED:
        return b, 0.0
    if now < b.until:
        return b, b.until - now
    # The cool-off is over, or the last trial's lease ran out: this request is the one trial.
    return replace(b, state=HALF_OPEN, until=now + policy.trial_timeout, trial=key), 0.0


def breaker_record(b: Breaker, outcome: BreakerOutcome, now: float, policy: BreakerPolicy, key: str = "") -> Breaker:
    """The breaker after a provider-level ``outcome`` of a request made at ``now`` on ``key``."""
    if outcome == "success":
        return CLOSED_BREAKER  # the provider answers: close, forget the count and the cool-off
    if outcome == "inconclusive":
        # The trial told nothing of the provider (cancelled; a key or request fault): the next request tries at once.
        if b.state == HALF_OPEN and key == b.trial:
            return replace(b, state=OPEN, until=now, trial="")
        return b
    failures = b.failures + 1
    if b.state == CLOSED:
        if policy.failures and failures >= policy.failures:
            return Breaker(OPEN, failures, now + policy.cooloff, policy.cooloff)
        return replace(b, failures=failures)
    if b.state == HALF_OPEN:  # the trial (or a request still out from before) failed: open for longer
        cooloff = min(max(b.cooloff * 2, policy.cooloff), policy.cooloff_max)
        return Breaker(OPEN, failures, now + cooloff, cooloff)
    return replace(b, failures=failures)  # open: a late answer from before it opened; the cool-off stands


def breaker_view(b: Breaker, now: float) -> dict[str, Any]:
    """What ``status()`` shows (``open_until`` in epoch seconds)."""
    state = b.state
    if state == OPEN and now >= b.until:
        state = HALF_OPEN  # cool-off over: the next request is the trial
    return {
        "state": state,
        "failures": b.failures,
        "open_until": round(b.until, 3) if state == OPEN else None,
        "open_for": round(max(b.until - now, 0.0), 3) if state == OPEN else 0.0,
        "cooloff": b.cooloff,
    }


def breaker_line(provider: str, old: Breaker, new: Breaker, cause: str) -> str | None:
    """The one log line of a breaker transition, or ``None`` when the state did not change."""
    if old.state == new.state:
        return None
    if new.state == OPEN:
        if old.state == CLOSED:
            return (
                f"breaker of {provider} opened after {new.failures} consecutive provider faults (last: {cause}); "
                f"skipping {provider} for {new.cooloff:g} s"
            )
        if cause == "inconclusive":
            return f"breaker of {provider}: the trial told nothing (cancelled, key fault); the next one is the trial"
        return f"breaker of {provider} reopened: the trial failed ({cause}); skipping {provider} for {new.cooloff:g} s"
    if new.state == HALF_OPEN:
        return f"breaker of {provider} half-open: one trial request goes to {provider}"
    return f"breaker of {provider} closed: {provider} answered again"


# ------------------------------------------------------------------ keys and providers


@dataclass(frozen=True, slots=True)
class Rules:
    """The numbers of the rule book."""

    backoff_start: float = BACKOFF_START
    backoff_cap: float = BACKOFF_CAP
    throttle_window: float = THROTTLE_WINDOW
    breaker: BreakerPolicy = BreakerPolicy()


@dataclass(frozen=True, slots=True)
class KeyState:
    """What the rules know of one key."""

    fingerprint: str = ""
    state: str = ACTIVE  # active | cooling | disabled
    until: float = 0.0  # cooling: the epoch time it comes back
    reason: str = ""  # why it cools or is disabled, for people (redacted text)
    cause: str = ""  # why, for machines: CAUSES (what a probe may clear; "" while active)
    backoff: float = 0.0  # the last rest given without a retry time (0: none since the last success)
    last_rate_limited: float = NEVER  # epoch time of its last rate limit


def fresh(fingerprint: str) -> KeyState:
    """A key as added: active, no rest, no backoff."""
    return KeyState(fingerprint)


@dataclass(frozen=True, slots=True)
class Group:
    """The key's fellow keys of the same provider, as far as the rules need them."""

    live: int = 0  # the other keys that are not disabled
    limited: int = 0  # ... of which were rate limited within the throttle window of now
    untimed: int = 0  # ... of which with a backoff running (their last 429 came without timing)


@dataclass(frozen=True, slots=True)
class ProviderState:
    """What the rules know of one provider."""

    throttled_until: float = 0.0  # provider-level throttling: no key of it before this
    breaker: Breaker = CLOSED_BREAKER


OutcomeKind = Literal[
    "ok",  # the request succeeded
    "answered",  # a stream's first event is in (the request goes on)
    "rate_limited",  # 429: retry_after if the provider said
    "quota",  # out of quota or credit: retry_after if a reset is known
    "invalid",  # the key is bad
    "provider_fault",  # 5xx, overloaded, timeout, connection error: counts for the breaker
    "other",  # a request fault, a missing model, a too-large answer: neither key nor breaker
    "abandoned",  # cancelled: tells nothing
]


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    retry_after: float | None = None
    message: str = ""
    daily: bool = False  # quota: a daily quota of the key's group (every key of the group rests)
    spend_cap: bool = False  # rate_limited: may be a spend cap (see RateLimited.spend_cap)


OK = Outcome("ok")
ANSWERED = Outcome("answered")
ABANDONED = Outcome("abandoned")


def outcome_of(error: UpstreamError | None) -> Outcome:
    """The outcome a request's result is, for the rules (``None``: success)."""
    if error is None:
        return OK
    if error.scope == "key":
        if isinstance(error, RateLimited):
            return Outcome("rate_limited", error.retry_after, error.message, spend_cap=error.spend_cap)
        if isinstance(error, QuotaExhausted):
            # The limit's name stays in the reason: what may bring the key back depends on it.
            tagged = f"{error.message} [{error.source}]" if error.source else error.message
            return Outcome("quota", error.retry_after, tagged, error.daily)
        if isinstance(error, KeyInvalid):
            return Outcome("invalid", None, error.message)
        return Outcome("other", None, error.message)
    if error.scope == "provider" and getattr(error, "retryable", False):
        return Outcome("provider_fault", error.retry_after, error.message)
    return Outcome("other", None, error.message)  # a missing model says nothing of the provider


@dataclass(frozen=True, slots=True)
class Changes:
    """What an outcome changes: the key, its provider, and whether every live key of the group is
    set back to :func:`fresh` (provider-level throttling took over from their rests)."""

    key: KeyState
    provider: ProviderState
    reset_group: bool = False
    group_until: float = 0.0  # > 0: every other live key of the key's quota group rests until then
    group_reason: str = ""  # ... for this reason (see :func:`group_rest`)
    capped: str = ""  # a spend cap: every other live key of the provider is disabled (quota) for this reason


def apply(key: KeyState, group: Group, provider: ProviderState, outcome: Outcome, now: float, rules: Rules) -> Changes:
    """The rule book: the states after ``outcome`` of a request made with ``key`` at ``now``."""
    breaker = _breaker_after(provider.breaker, outcome, now, rules.breaker, key)
    if breaker is not provider.breaker:
        provider = replace(provider, breaker=breaker)
    kind = outcome.kind
    if kind == "ok":
        return Changes(replace(key, backoff=0.0) if key.backoff else key, provider)
    if kind == "rate_limited":
        return _rate_limited(key, group, provider, outcome, now, rules)
    if kind == "quota":
        if outcome.retry_after:
            reason = f"quota exhausted: {outcome.message}"[:200]
            until = now + outcome.retry_after
            if outcome.daily:  # the project's daily quota: its other keys are spent as well
                shared = f"quota exhausted: daily quota of its group: {outcome.message}"[:200]
                return Changes(cool(key, until, reason, QUOTA), provider, group_until=until, group_reason=shared)
            return Changes(cool(key, until, reason, QUOTA), provider)
        return Changes(disable(key, f"out of credit or quota: {outcome.message}"[:200], QUOTA), provider)
    if kind == "invalid":
        return Changes(disable(key, f"invalid key: {outcome.message}"[:200], INVALID), provider)
    return Changes(key, provider)


def success_changes_nothing(key: KeyState, breaker: Breaker) -> bool:
    """Whether :func:`apply` of a success would change nothing (a store's hot path may skip it)."""
    return key.backoff == 0.0 and breaker is CLOSED_BREAKER


def _breaker_after(b: Breaker, outcome: Outcome, now: float, policy: BreakerPolicy, key: KeyState) -> Breaker:
    kind = outcome.kind
    if kind in ("ok", "answered"):
        return b if b is CLOSED_BREAKER else breaker_record(b, "success", now, policy, key.fingerprint)
    if kind == "provider_fault":
        return breaker_record(b, "failure", now, policy, key.fingerprint)
    if kind == "abandoned" or b.state == HALF_OPEN:
        # A key or request fault neither counts nor resets; a trial that got one (or was cancelled) told nothing.
        return breaker_record(b, "inconclusive", now, policy, key.fingerprint)
    return b


def _rate_limited(
    key: KeyState, group: Group, provider: ProviderState, outcome: Outcome, now: float, rules: Rules
) -> Changes:
    retry_after = outcome.retry_after
    backoff = key.backoff
    if retry_after is None:
        backoff = min(max(backoff * 2, rules.backoff_start), rules.backoff_cap)
        delay = backoff
    else:
        delay = retry_after
    limited = replace(key, backoff=backoff, last_rate_limited=now)
    limited = cool(limited, now + delay, "rate limited", RATE_LIMITED)
    # Every live key limited within a few seconds: the account or IP is throttled, not the keys.
    # Rest the provider instead of each key, and undo the per-key backoff growth so no key is
    # punished for it.
    own = 0 if key.state == DISABLED else 1
    own_limited = own if rules.throttle_window >= 0 else 0
    live = group.live + own
    if live > 1 and group.limited + own_limited == live:
        if outcome.spend_cap and retry_after is None and group.untimed == group.limited:
            # Every key answered 429 without timing: the account's spend cap, not a rate.
            reason = spend_cap_reason(outcome.message)
            return Changes(disable(limited, reason, QUOTA) if own else limited, provider, capped=reason)
        # The latest answer is the best word on when the account is free again.
        until = max(provider.throttled_until, now + delay)
        return Changes(
            fresh(key.fingerprint) if own else limited, replace(provider, throttled_until=until), reset_group=True
        )
    return Changes(limited, provider)


def spend_cap_reason(message: str) -> str:
    return f"out of credit or quota: every key answered 429 without retry timing (a spend cap): {message}"[:200]


def capped(key: KeyState, changes: Changes) -> KeyState:
    """A fellow key after ``changes``: a spend cap takes every live key out (quota)."""
    if not changes.capped or key.state == DISABLED:
        return key
    return disable(key, changes.capped, QUOTA)


def limited_untimed(key: KeyState, now: float, rules: Rules) -> bool:
    """Whether ``key`` counts as limited without timing in a :class:`Group` at ``now``."""
    return key.backoff > 0 and limited_recently(key, now, rules)


def cool(key: KeyState, until: float, reason: str, cause: str = RATE_LIMITED) -> KeyState:
    """``key`` resting until ``until`` — unless it rests longer already, or is disabled."""
    if key.state == DISABLED:
        return key
    if key.state == COOLING and key.until >= until:
        return key  # a second rate limit extends a rest, never shortens it
    return replace(key, state=COOLING, until=until, reason=reason, cause=cause)


def group_rest(key: KeyState, changes: Changes) -> KeyState:
    """A fellow of the key's quota group after ``changes`` (a daily quota rests them all)."""
    if not changes.group_until:
        return key
    return cool(key, changes.group_until, changes.group_reason, QUOTA)


def rest_over(key: KeyState) -> KeyState:
    """A cooling key whose rest has ended: active again (its backoff stays until a success)."""
    return replace(key, state=ACTIVE, until=0.0, reason="", cause="")


def disable(key: KeyState, reason: str, cause: str = OPERATOR) -> KeyState:
    return replace(key, state=DISABLED, reason=reason, until=0.0, cause=cause)


def enable(key: KeyState) -> KeyState:
    """An operator's enable: active at once, with no rest and no backoff."""
    return replace(key, state=ACTIVE, reason="", until=0.0, backoff=0.0, cause="")


#: Causes a probe may look into; the others (an operator's action, a removal) heal only by hand.
PROBED_CAUSES = frozenset({INVALID, QUOTA})


def recover(key: KeyState, cause: str) -> KeyState | None:
    """``key`` back in rotation (as :func:`enable`: no rest, no backoff) when it is still out for
    ``cause`` — what a probe saw cleared — else ``None``: it is active, or out for another reason
    (an operator disabled it meanwhile), which this evidence does not clear."""
    if key.state == ACTIVE or key.cause != cause or cause not in PROBED_CAUSES:
        return None
    return enable(key)


def take_out(key: KeyState, reason: str, cause: str, until: float | None = None) -> KeyState:
    """``key`` out of rotation for ``cause``: until ``until`` (a known reset, e.g. OpenRouter's
    ``limit_reset``: it rests and comes back by itself), else disabled until something clears it.
    An operator's disable and a removal stand: no reading overrides them."""
    if key.state == DISABLED and key.cause in (OPERATOR, REMOVED):
        return key
    if until is None:
        return disable(key, reason, cause)
    return replace(key, state=COOLING, until=until, reason=reason, cause=cause)


def limited_recently(key: KeyState, now: float, rules: Rules) -> bool:
    """Whether ``key`` counts as limited in a :class:`Group` at ``now``."""
    return key.state != DISABLED and now - key.last_rate_limited <= rules.throttle_window
