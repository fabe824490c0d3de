"""Quota windows and key groups from the environment: ``<P>_RPM``, ``_TPM``, ``_RPD``, ``_RATE``,
``<P>_API_KEY_<N>_GROUP``, ``<P>_GROUP_<NAME>_<LIMIT>`` and per-key overrides (a part of
:mod:`keywheel.config`, which calls :func:`quota_of` for each provider)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from keywheel.secrets import ApiKey
from keywheel.state.windows import TOKENS, Quota, WindowSpec, parse_rate


class Problems(Protocol):
    """Where a setting's problem is told (``keywheel.config``'s collector)."""

    def error(self, name: str, why: str) -> None: ...


def variable_of(key: ApiKey) -> str:
    prefix = key.provider.upper()
    if key.label == "key":
        return f"{prefix}_API_KEY"
    if key.label == "token":
        return "ANTHROPIC_AUTH_TOKEN"
    if key.label.startswith("k"):
        return f"{prefix}_API_KEYS[{key.label[1:]}]"
    return f"{prefix}_API_KEY_{key.label}"


_LIMITS = ("RPM", "TPM", "RPD", "RATE")
_GROUP_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def _windows(env: Mapping[str, str], base: str, tz: str, problems: Problems) -> dict[str, tuple[WindowSpec, ...]]:
    """The windows set by ``{base}_RPM``, ``_TPM``, ``_RPD`` and ``_RATE`` (comma list of N/Ts), by suffix."""
    found: dict[str, tuple[WindowSpec, ...]] = {}
    for suffix in _LIMITS:
        var = f"{base}_{suffix}"
        raw = env.get(var, "").strip()
        if not raw:
            continue
        if suffix == "RATE":
            specs = []
            for part in raw.split(","):
                try:
                    limit, seconds = parse_rate(part)
                except ValueError as exc:
                    problems.error(var, str(exc))
                    break
                specs.append(WindowSpec(part.strip().replace(" ", ""), limit, seconds))
            else:
                found[suffix] = tuple(specs)
            continue
        if not raw.isdigit() or int(raw) < 1:
            problems.error(var, f"expected a whole number of at least 1, got {raw!r}")
            continue
        limit = int(raw)
        spec = {
            "RPM": WindowSpec("rpm", limit, 60.0),
            "TPM": WindowSpec("tpm", limit, 60.0, TOKENS),
            "RPD": WindowSpec("rpd", limit, 86400.0, daily=True, tz=tz),
        }[suffix]
        found[suffix] = (spec,)
    return found


def _flat(windows: Mapping[str, tuple[WindowSpec, ...]]) -> tuple[WindowSpec, ...]:
    return tuple(spec for suffix in _LIMITS for spec in windows.get(suffix, ()))


def _key_base(key: ApiKey) -> str:
    """The variable a key came from, as the stem of its ``_GROUP`` and per-key limits."""
    return f"{key.provider.upper()}_API_KEYS" if _listed(key) else variable_of(key)


def _listed(key: ApiKey) -> bool:
    """Whether the key came from ``<P>_API_KEYS`` (labels k1, k2, …)."""
    return key.label[:1] == "k" and key.label[1:].isdigit()


def quota_of(env: Mapping[str, str], name: str, keys: list[ApiKey], problems: Problems) -> Quota:
    """``<P>_RPM`` and kin, key groups and their overrides, resolved per key (see :class:`Quota`)."""
    prefix = name.upper()
    tz_var = f"{prefix}_DAY_RESET_TZ"
    tz = env.get(tz_var, "").strip() or ("America/Los_Angeles" if name == "gemini" else "UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        problems.error(tz_var, f"unknown time zone {tz!r} (expected e.g. UTC or America/Los_Angeles)")
        tz = "UTC"
    default = _windows(env, prefix, tz, problems)
    key_group: dict[str, str] = {}
    key_windows: dict[str, tuple[WindowSpec, ...]] = {}
    groups: dict[str, tuple[WindowSpec, ...]] = {}
    for key in keys:
        base = _key_base(key)
        group_var = f"{base}_GROUP"
        raw = env.get(group_var, "").strip().lower()
        own = _windows(env, base, tz, problems) if not _listed(key) else {}
        if raw:
            if not _GROUP_NAME.match(raw):
                problems.error(group_var, f"a group name is letters, digits, - and _, got {raw!r}")
                continue
            key_group[key.fingerprint] = raw
            groups.setdefault(raw, _flat(default))
            if own:
                problems.error(
                    f"{base}_{next(iter(own))}",
                    f"the key is in group {raw!r}: set {prefix}_GROUP_{_group_var(raw)}_… for the group",
                )
        elif own:
            key_windows[key.fingerprint] = _flat({**default, **own})
    pattern = re.compile(rf"^{re.escape(prefix)}_GROUP_([A-Z0-9_]+)_({'|'.join(_LIMITS)})$")
    by_var = {_group_var(g): g for g in groups}
    for var in sorted(env):
        match = pattern.match(var)
        if not match:
            continue
        group = by_var.get(match.group(1))
        if group is None:
            wanted = match.group(1).lower()
            problems.error(var, f"no key of {name} is in a group {wanted!r} (set {prefix}_API_KEY_<N>_GROUP)")
            continue
        groups[group] = _flat({**default, **_windows(env, f"{prefix}_GROUP_{match.group(1)}", tz, problems)})
    _stray_key_limits(env, prefix, keys, problems)
    return Quota(_flat(default), groups, key_group, key_windows, tz)


def _group_var(group: str) -> str:
    return group.upper().replace("-", "_")


def _stray_key_limits(env: Mapping[str, str], prefix: str, keys: list[ApiKey], problems: Problems) -> None:
    """``<P>_API_KEY_9_RPM`` (or ``_GROUP``) with no ``<P>_API_KEY_9``: a typo, not silence."""
    labels = {k.label for k in keys}
    pattern = re.compile(rf"^{re.escape(prefix)}_API_KEY_(\d+)_(GROUP|{'|'.join(_LIMITS)})$")
    for var in env:
        match = pattern.match(var)
        if match and match.group(1) not in labels:
            problems.error(var, f"there is no key {prefix}_API_KEY_{match.group(1)}")
