"""Settings from the environment and an optional ``.env`` file.

Validated once, at start: every problem found is collected and raised together
as one :class:`~keywheel.errors.ConfigError` that names each offending variable.
Keys become :class:`~keywheel.secrets.ApiKey` at once, so nothing after this
module ever holds a printable key.  This module never logs a key; warnings name
keys by fingerprint.

Names (compatible with existing application ``.env`` files)::

    AI_PROVIDER                     primary provider
    ENABLE_<P>                      true/false; default true when <P> has keys
    FALLBACK_ORDER                  comma list; default the other enabled providers
    <P>_API_KEY, <P>_API_KEY_1..N, <P>_API_KEYS=k1,k2
    ANTHROPIC_AUTH_TOKEN            bearer-token key (Anthropic-compatible hosts)
    <P>_MODEL, <P>_BASE_URL, <P>_CONTEXT_WINDOW, <P>_DIALECT (custom providers)
    <P>_RPM, <P>_TPM, <P>_RPD, <P>_RATE=N/Ts[,N/Ts]   quota windows (per key group)
    <P>_API_KEY_<N>_GROUP=name      keys of one project/account share windows (_KEY_GROUP, _TOKEN_GROUP)
    <P>_GROUP_<NAME>_RPM …          one group's windows; <P>_API_KEY_<N>_RPM … one ungrouped key's
    <P>_DAY_RESET_TZ                where daily windows reset (Gemini: America/Los_Angeles, else UTC)
    KEYWHEEL_*                      timeouts, waits, retries, state, gateway keys
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from keywheel.config_quota import quota_of, variable_of
from keywheel.errors import ConfigError, KeywheelError
from keywheel.ops.settings import OpsSettings, ops_settings
from keywheel.providers import ADAPTERS, PROVIDERS, Provider, get_adapter
from keywheel.providers.paths import check_model
from keywheel.secrets import ApiKey
from keywheel.state.factory import LIBRARY_DEFAULT, parse_retention, parse_state
from keywheel.state.sqlite_file import DEFAULT_RETENTION
from keywheel.state.windows import Quota

log = logging.getLogger("keywheel.config")

# What each known provider is comes from its module (keywheel.providers.PROVIDERS); nothing is repeated here.
Preset = Provider
PRESETS: Mapping[str, Provider] = PROVIDERS
BUILTIN_ORDER = tuple(name for name, p in PROVIDERS.items() if p.on_by_default)

# Known context windows, for failing over a too-long prompt only to a larger window.
CONTEXT_WINDOWS: tuple[tuple[str, int], ...] = (
    ("claude-", 200_000),
    ("anthropic/claude-", 200_000),
    ("gemini-", 1_048_576),
    ("google/gemini-", 1_048_576),
    ("gpt-4.1", 1_047_576),
    ("openai/gpt-4.1", 1_047_576),
    ("gpt-4o", 128_000),
    ("openai/gpt-4o", 128_000),
    ("glm-4", 128_000),
)

DIALECTS = tuple(ADAPTERS)
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
DEFAULT_ENV_FILE = ".env"


@dataclass(slots=True)
class ProviderConfig:
    name: str
    dialect: str
    base_url: str
    model: str
    keys: list[ApiKey]
    enabled: bool
    headers: dict[str, str] = field(default_factory=dict)
    context_window: int | None = None
    quota: Quota = field(default_factory=Quota)  # quota windows and key groups

    def speaks(self, dialect: str) -> bool:
        """Whether this provider's upstream speaks ``dialect`` (a caller's), so a body in it may
        pass through.  The one place that question is answered."""
        return self.dialect == dialect


@dataclass(slots=True)
class Settings:
    primary: str
    chain: list[str]  # enabled providers, primary first
    providers: dict[str, ProviderConfig]
    state: str = "memory"  # KEYWHEEL_STATE (keywheel.state.factory)
    state_retention: float = DEFAULT_RETENTION  # seconds a removed key's history (and a day's counters) is kept
    timeout: float = 300.0  # total deadline of one call, all attempts and waits included
    attempt_timeout: float = 120.0  # one upstream attempt (to the status line for streams)
    stream_idle_timeout: float = 120.0  # longest pause between two chunks of a stream
    max_wait: float = 10.0  # wait this long at most for a resting key before NoKeyAvailable
    provider_attempts: int = 2  # tries of one provider on provider faults before failing over
    gateway_keys: list[ApiKey] = field(default_factory=list)
    admin_key: ApiKey | None = None
    max_body_bytes: int = 20 * 1024 * 1024  # gateway: larger request bodies get 413
    body_timeout: float = 30.0  # gateway: a body not received in this time gets 408
    shutdown_timeout: float = 30.0  # gateway: on SIGTERM, in-flight requests get this long to finish
    header_timeout: float = 10.0  # gateway: a connection without a complete request head by then is closed
    max_connections: int = 1000  # gateway: open client connections beyond this get a 503 and are closed
    max_response_bytes: int = 64 * 1024 * 1024  # a larger non-streamed upstream answer is a 502
    max_event_bytes: int = 16 * 1024 * 1024  # a larger single SSE event ends the stream in-band
    breaker_failures: int = 5  # consecutive provider faults that open a provider's breaker (0: no breaker)
    breaker_cooloff: float = 5.0  # first cool-off of an open breaker; doubles after each failed trial ...
    breaker_cooloff_max: float = 60.0  # ... up to this
    # A Redis state (keywheel.state.redis, keywheel.state.fallback):
    redis_prefix: str = "keywheel"  # KEYWHEEL_REDIS_PREFIX: keeps deployments on one Redis apart
    redis_fallback: str = "local"  # KEYWHEEL_REDIS_FALLBACK: local | fail, during a Redis outage
    metrics: bool = True  # gateway: GET /metrics (KEYWHEEL_METRICS=off: no route, no subscriber)
    metrics_public: bool = False  # gateway: /metrics without the admin key
    log_format: str = "text"  # text | json (one JSON object per log line)
    warnings: list[str] = field(default_factory=list)
    ops: OpsSettings = field(default_factory=OpsSettings)  # key checks, recovery, credit (keywheel.ops)

    def secrets(self) -> list[str]:
        """Every secret value in these settings, for redaction."""
        out = [k.reveal() for p in self.providers.values() for k in p.keys]
        out += [k.reveal() for k in self.gateway_keys]
        if self.admin_key is not None:
            out.append(self.admin_key.reveal())
        out += parse_state(self.state).secrets
        return out


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=VALUE`` lines, optional ``export``, quotes, ``#`` comments."""
    values: dict[str, str] = {}
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not name:
            continue
        value = value.strip()
        if value[:1] in ("'", '"') and len(value) >= 2 and value.find(value[0], 1) > 0:
            quote = value[0]
            value = value[1 : value.find(quote, 1)]
            if quote == '"':
                value = value.replace("\\n", "\n")
        else:
            # an unquoted value ends at " #"
            hash_at = value.find(" #")
            if hash_at >= 0:
                value = value[:hash_at].rstrip()
        values[name] = value
    return values


def load_env(env: Mapping[str, str] | None = None, env_file: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The variables keywheel sees.

    - ``load_env()``: the process environment over ``./.env`` (if there is one);
    - ``load_env(env)``: exactly ``env`` — no file is read;
    - ``env_file=path`` (with either): that file under ``env`` (default: the process
      environment).  A named file that does not exist is a :class:`ConfigError`.

    A blank value (``NAME=`` in a file, or an empty variable) means "not set": it neither
    counts nor hides a value the file gives.
    """
    merged: dict[str, str] = {}
    path: str | os.PathLike[str] | None = env_file
    if path is None and env is None and Path(DEFAULT_ENV_FILE).is_file():
        path = DEFAULT_ENV_FILE
    if path is not None:
        if not Path(path).exists():
            raise ConfigError({"--env-file": f"{os.fspath(path)!r} does not exist"})
        if Path(path).is_dir():
            raise ConfigError({"--env-file": f"{os.fspath(path)!r} is a folder, not a .env file"})
        merged.update(_set_only(read_env_file(path)))
    merged.update(_set_only(os.environ if env is None else env))
    return merged


def config_source(env_file: str | os.PathLike[str] | None = None) -> Callable[[], Settings]:
    """What reads the configuration again, for a reload: the process environment as it is now
    (frozen here), over the env file read anew each time (``env_file``, else ``./.env`` if it is
    there now).  Each call returns fresh :class:`Settings` or raises :class:`ConfigError`."""
    environment = dict(os.environ)
    path = env_file if env_file is not None or not Path(DEFAULT_ENV_FILE).is_file() else DEFAULT_ENV_FILE

    def read() -> Settings:
        return settings_from_env(load_env(environment, path))

    return read


def _set_only(env: Mapping[str, str]) -> dict[str, str]:
    """Drop blank values: ``NAME=`` means not set."""
    return {name: value for name, value in env.items() if value.strip()}


class _Problems:
    def __init__(self) -> None:
        self.errors: dict[str, str] = {}
        self.warnings: list[str] = []

    def error(self, name: str, why: str) -> None:
        self.errors.setdefault(name, why)


def _bool(env: Mapping[str, str], name: str, problems: _Problems) -> bool | None:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    problems.error(name, f"expected true or false, got {raw!r}")
    return None


def _number(env: Mapping[str, str], name: str, default: float, problems: _Problems, *, integer: bool = False) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        problems.error(name, f"expected {'an integer' if integer else 'a number'}, got {raw!r}")
        return default
    if value < 0 or (integer and value < 1):
        problems.error(name, f"must be {'at least 1' if integer else 'zero or more'}, got {raw!r}")
        return default
    return value


def _url(env: Mapping[str, str], name: str, default: str, problems: _Problems) -> str:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        problems.error(name, f"not an http(s) URL: {raw!r}")
        return default
    if parts.query or parts.fragment:
        problems.error(name, "a base URL takes no query or fragment")
        return default
    return raw.strip().rstrip("/")


def _collect_keys(env: Mapping[str, str], name: str, problems: _Problems) -> list[ApiKey]:
    """Keys of provider ``name`` in configuration order, each validated."""
    prefix = name.upper()
    found: list[tuple[str, str, str, str]] = []  # (variable, value, label, auth)
    single = f"{prefix}_API_KEY"
    if single in env:
        found.append((single, env[single], "key", "key"))
    numbered = []
    pattern = re.compile(rf"^{re.escape(prefix)}_API_KEY_(\d+)$")
    for var, value in env.items():
        match = pattern.match(var)
        if match:
            numbered.append((int(match.group(1)), var, value))
    for n, var, value in sorted(numbered):
        found.append((var, value, str(n), "key"))
    listed = f"{prefix}_API_KEYS"
    if listed in env:
        for i, value in enumerate(env[listed].split(",")):
            if value.strip() or len(env[listed].split(",")) == 1:
                found.append((f"{listed}[{i + 1}]", value.strip(), f"k{i + 1}", "key"))
    token_var = preset.token_var if (preset := PROVIDERS.get(name)) is not None else None
    if token_var is not None and token_var in env:
        found.append((token_var, env[token_var], "token", "bearer"))

    keys: list[ApiKey] = []
    seen: dict[str, str] = {}
    for var, value, label, auth in found:
        if value == "":
            problems.error(var, "is empty")
            continue
        if value != value.strip():
            problems.error(var, "has leading or trailing whitespace")
            continue
        if any(ch.isspace() for ch in value):
            problems.error(var, "contains whitespace")
            continue
        if value in seen:
            problems.error(var, f"is the same key as {seen[value]}")
            continue
        seen[value] = var
        keys.append(ApiKey(value, name, label, auth=auth))
    return keys


def _provider_names(env: Mapping[str, str]) -> list[str]:
    """Built-in providers, then custom ones named by AI_PROVIDER / FALLBACK_ORDER / ENABLE_<X>."""
    names = list(BUILTIN_ORDER)
    mentioned: list[str] = []
    if env.get("AI_PROVIDER", "").strip():
        mentioned.append(env["AI_PROVIDER"].strip().lower())
    mentioned += [p.strip().lower() for p in env.get("FALLBACK_ORDER", "").split(",") if p.strip()]
    for var, value in env.items():
        if var.startswith("ENABLE_") and value.strip().lower() in _TRUE:
            mentioned.append(var[7:].lower())
    for name in mentioned:
        if name in names:
            continue
        if name in PRESETS or f"{name.upper()}_BASE_URL" in env:
            if _NAME_RE.match(name):
                names.append(name)
    return names


def _provider(env: Mapping[str, str], name: str, problems: _Problems) -> ProviderConfig:
    prefix = name.upper()
    preset = PRESETS.get(name)
    dialect = env.get(f"{prefix}_DIALECT", "").strip().lower() or (preset.adapter.dialect if preset else "openai")
    if dialect not in DIALECTS:
        problems.error(f"{prefix}_DIALECT", f"must be one of {', '.join(DIALECTS)}, got {dialect!r}")
        dialect = "openai"
    default_url = preset.base_url if preset else ""
    base_url = _url(env, f"{prefix}_BASE_URL", default_url, problems)
    model = env.get(f"{prefix}_MODEL", "").strip() or (preset.model if preset else "")
    keys = _collect_keys(env, name, problems)
    if get_adapter(dialect).key_auth == "bearer":  # the wire format sends every key as a bearer token
        keys = [ApiKey(k.reveal(), name, k.label, auth="bearer") for k in keys]
    enable_flag = _bool(env, f"ENABLE_{prefix}", problems)
    # Custom providers and the OpenAI preset are on only when asked for.
    default_on = bool(keys) and (name in BUILTIN_ORDER or prefix in _named(env))
    enabled = enable_flag if enable_flag is not None else default_on
    headers: dict[str, str] = {}
    for var, header in preset.env_headers if preset else ():
        if env.get(var):
            headers[header] = env[var]
    window = int(_number(env, f"{prefix}_CONTEXT_WINDOW", 0, problems, integer=False)) or _known_window(model)
    config = ProviderConfig(name, dialect, base_url, model, keys, enabled, headers, window)
    config.quota = quota_of(env, name, keys, problems)
    if enabled:
        if not keys:
            problems.error(
                f"ENABLE_{prefix}",
                f"{name} is enabled but has no keys: set {prefix}_API_KEY_1 (or {prefix}_API_KEY / {prefix}_API_KEYS)",
            )
        if not base_url:
            problems.error(f"{prefix}_BASE_URL", f"custom provider {name} needs a base URL")
        if not model:
            problems.error(f"{prefix}_MODEL", f"custom provider {name} needs a model")
        else:
            try:
                check_model(model, dialect)
            except KeywheelError as exc:
                problems.error(f"{prefix}_MODEL", str(exc).removeprefix("model: "))
        for key in keys:
            warning = _shape_warning(key, name, preset, base_url)
            if warning:
                problems.warnings.append(warning)
    return config


# What real keys of the known providers start with, most specific first.
KEY_SHAPES: tuple[tuple[str, str], ...] = (
    ("sk-ant-", "anthropic"),
    ("sk-or-", "openrouter"),
    ("AIza", "gemini"),
    ("sk-", "openai"),
)


def key_shape(value: str) -> str | None:
    """The known provider whose keys look like ``value``, if any."""
    for prefix, provider in KEY_SHAPES:
        if value.startswith(prefix):
            return provider
    return None


def _shape_warning(key: ApiKey, name: str, preset: Preset | None, base_url: str) -> str | None:
    """A key that looks like another known provider's is a warning wherever it points; one that
    looks like nothing known only at the provider's own default URL.  ``sk-`` alone (OpenAI's
    shape) is used by many OpenAI-compatible hosts, so it warns only for the built-in providers."""
    shape = key_shape(key.reveal())
    if shape is not None and shape != name and (shape != "openai" or preset is not None):
        variable = variable_of(key)
        return (
            f"{key.fingerprint} ({variable}) looks like {_article(shape)} {shape} key, not {_article(name)} {name} key"
        )
    if shape is None and preset is not None and base_url == preset.base_url and key.auth == "key":
        expected = f"expected it to start {preset.key_prefix!r}"
        return f"{key.fingerprint} does not look like {_article(name)} {name} key ({expected})"
    return None


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _named(env: Mapping[str, str]) -> set[str]:
    names = {env.get("AI_PROVIDER", "").strip().upper()}
    names |= {p.strip().upper() for p in env.get("FALLBACK_ORDER", "").split(",")}
    return names - {""}


def _known_window(model: str) -> int | None:
    for prefix, window in CONTEXT_WINDOWS:
        if model.startswith(prefix):
            return window
    return None


def _gateway_keys(env: Mapping[str, str], problems: _Problems) -> tuple[list[ApiKey], ApiKey | None]:
    keys: list[ApiKey] = []
    raw = env.get("KEYWHEEL_GATEWAY_KEYS", "")
    for i, value in enumerate(v.strip() for v in raw.split(",")):
        if value:
            keys.append(ApiKey(value, "gateway", str(i + 1)))
    admin_raw = env.get("KEYWHEEL_ADMIN_KEY", "").strip()
    admin = ApiKey(admin_raw, "admin", "key") if admin_raw else None
    if admin is not None and len(admin_raw) < 16:
        problems.error("KEYWHEEL_ADMIN_KEY", "must be at least 16 characters")
    return keys, admin


def _breaker_settings(env: Mapping[str, str], settings: Settings, problems: _Problems) -> None:
    """``KEYWHEEL_BREAKER_FAILURES`` (an integer, 0 turns the breaker off), ``_COOLOFF`` and ``_COOLOFF_MAX``."""
    failures = _number(env, "KEYWHEEL_BREAKER_FAILURES", 5, problems)
    if failures != int(failures):
        problems.error(
            "KEYWHEEL_BREAKER_FAILURES", f"expected a whole number, got {env['KEYWHEEL_BREAKER_FAILURES']!r}"
        )
    settings.breaker_failures = int(failures)
    cooloff = _number(env, "KEYWHEEL_BREAKER_COOLOFF", 5.0, problems)
    cap = _number(env, "KEYWHEEL_BREAKER_COOLOFF_MAX", max(60.0, cooloff), problems)
    if cooloff <= 0 and settings.breaker_failures:
        problems.error("KEYWHEEL_BREAKER_COOLOFF", "must be more than zero (KEYWHEEL_BREAKER_FAILURES=0 turns it off)")
    if cap < cooloff:
        problems.error("KEYWHEEL_BREAKER_COOLOFF_MAX", f"must be at least KEYWHEEL_BREAKER_COOLOFF ({cooloff:g} s)")
    settings.breaker_cooloff, settings.breaker_cooloff_max = cooloff, cap


def _ops_settings(env: Mapping[str, str], settings: Settings, problems: _Problems) -> None:
    """``KEYWHEEL_METRICS`` (on/off), ``KEYWHEEL_METRICS_PUBLIC`` and ``KEYWHEEL_LOG_FORMAT`` (text/json)."""
    metrics = _bool(env, "KEYWHEEL_METRICS", problems)
    settings.metrics = True if metrics is None else metrics
    settings.metrics_public = bool(_bool(env, "KEYWHEEL_METRICS_PUBLIC", problems))
    fmt = env.get("KEYWHEEL_LOG_FORMAT", "").strip().lower() or "text"
    if fmt not in ("text", "json"):
        problems.error("KEYWHEEL_LOG_FORMAT", f"expected text or json, got {fmt[:40]!r}")
    settings.log_format = fmt


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """Build and validate :class:`Settings` from a mapping of variables."""
    problems = _Problems()
    env = _set_only(env)
    providers = {name: _provider(env, name, problems) for name in _provider_names(env)}
    enabled = [name for name, p in providers.items() if p.enabled]

    primary = env.get("AI_PROVIDER", "").strip().lower()
    if primary:
        if primary not in providers:
            problems.error(
                "AI_PROVIDER",
                f"unknown provider {primary!r}: use one of {', '.join(BUILTIN_ORDER)}, "
                f"or define a custom one with {primary.upper()}_BASE_URL",
            )
        elif not providers[primary].enabled:
            why = "has no keys" if not providers[primary].keys else f"is disabled by ENABLE_{primary.upper()}"
            problems.error("AI_PROVIDER", f"names {primary!r}, which {why}")
    elif enabled:
        primary = enabled[0]

    fallbacks: list[str] = []
    if env.get("FALLBACK_ORDER", "").strip():
        for name in (p.strip().lower() for p in env["FALLBACK_ORDER"].split(",")):
            if not name or name == primary or name in fallbacks:
                continue
            if name not in providers:
                problems.error("FALLBACK_ORDER", f"unknown provider {name!r}")
            elif not providers[name].enabled:
                problems.warnings.append(f"FALLBACK_ORDER names {name!r}, which is not enabled; skipped")
            else:
                fallbacks.append(name)
    else:
        fallbacks = [name for name in enabled if name != primary]

    if not enabled and not problems.errors:
        problems.error(
            "AI_PROVIDER",
            "no provider has keys: set e.g. GEMINI_API_KEY_1, OPENROUTER_API_KEY_1 or ANTHROPIC_API_KEY "
            "(in the environment or a .env file)",
        )

    state = env.get("KEYWHEEL_STATE", "").strip() or LIBRARY_DEFAULT
    retention = DEFAULT_RETENTION
    try:
        parse_state(state)
    except ConfigError as err:
        problems.errors.update(err.problems)
    try:
        retention = parse_retention(env.get("KEYWHEEL_STATE_RETENTION"))
    except ConfigError as err:
        problems.errors.update(err.problems)
    redis_fallback = env.get("KEYWHEEL_REDIS_FALLBACK", "local").strip().lower() or "local"
    if redis_fallback not in ("local", "fail"):
        problems.error("KEYWHEEL_REDIS_FALLBACK", f"'local' or 'fail', got {redis_fallback!r}")

    gateway_keys, admin_key = _gateway_keys(env, problems)
    settings = Settings(
        primary=primary,
        chain=([primary] if primary else []) + fallbacks,
        providers=providers,
        state=state,
        state_retention=retention,
        timeout=_number(env, "KEYWHEEL_TIMEOUT", 300.0, problems),
        attempt_timeout=_number(env, "KEYWHEEL_ATTEMPT_TIMEOUT", 120.0, problems),
        stream_idle_timeout=_number(env, "KEYWHEEL_STREAM_IDLE_TIMEOUT", 120.0, problems),
        max_wait=_number(env, "KEYWHEEL_MAX_WAIT", 10.0, problems),
        provider_attempts=int(_number(env, "KEYWHEEL_PROVIDER_ATTEMPTS", 2, problems, integer=True)),
        gateway_keys=gateway_keys,
        admin_key=admin_key,
        max_body_bytes=int(_number(env, "KEYWHEEL_MAX_BODY_BYTES", 20 * 1024 * 1024, problems, integer=True)),
        body_timeout=_number(env, "KEYWHEEL_BODY_TIMEOUT", 30.0, problems),
        shutdown_timeout=_number(env, "KEYWHEEL_SHUTDOWN_TIMEOUT", 30.0, problems),
        header_timeout=_number(env, "KEYWHEEL_HEADER_TIMEOUT", 10.0, problems),
        max_connections=int(_number(env, "KEYWHEEL_MAX_CONNECTIONS", 1000, problems, integer=True)),
        max_response_bytes=int(_number(env, "KEYWHEEL_MAX_RESPONSE_BYTES", 64 * 1024 * 1024, problems, integer=True)),
        max_event_bytes=int(_number(env, "KEYWHEEL_MAX_EVENT_BYTES", 16 * 1024 * 1024, problems, integer=True)),
        redis_prefix=env.get("KEYWHEEL_REDIS_PREFIX", "keywheel").strip() or "keywheel",
        redis_fallback=redis_fallback,
        warnings=problems.warnings,
    )
    _breaker_settings(env, settings, problems)
    _ops_settings(env, settings, problems)
    settings.ops, ops_problems = ops_settings(env, providers)
    problems.errors.update(ops_problems)
    if problems.errors:
        raise ConfigError(problems.errors)
    for warning in problems.warnings:
        log.warning("%s", warning)
    return settings
