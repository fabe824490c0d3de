"""keywheel.ops.metrics and the log formats, in process: the exposition's corners (escaping,
numbers, series caps, status shapes other helpers add), the JSON formatter and the key-state log."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from keywheel.config import settings_from_env
from keywheel.errors import ConfigError
from keywheel.logs import FIELDS, JsonFormatter, formatter
from keywheel.observe import (
    AttemptFinished,
    KeyStateChanged,
    Observer,
    ProbeFinished,
    RequestFinished,
    access_log,
    key_state_log,
)
from keywheel.ops import metrics as m
from keywheel.secrets import RedactingFilter, Redactor, register
from keywheel.status import KeyStatus, ProviderStatus, Status
from keywheel.types import Usage


@dataclass(frozen=True, slots=True)
class CreditKey(KeyStatus):
    """A key status with the credit the probes add (any object with ``limit_remaining``)."""

    credit: Any = None


@dataclass(frozen=True, slots=True)
class WindowedProvider(ProviderStatus):
    """A provider status with the quota windows the windows work adds."""

    windows: tuple[Any, ...] = ()


@dataclass
class Credit:
    limit_remaining: float | None


def status_of(*providers: ProviderStatus) -> Status:
    return Status(providers[0].name, tuple(p.name for p in providers), providers, time.time())


def families(text: bytes) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


EMPTY = status_of(ProviderStatus("p", "openai", "x"))


def test_label_values_are_escaped_and_numbers_spelled_as_the_format_wants() -> None:
    assert m.escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert m.escape("gemini#1 …ab12") == "gemini#1 …ab12"
    assert [m.number(v) for v in (3, 0.25, math.inf, -math.inf, math.nan)] == ["3", "0.25", "+Inf", "-Inf", "NaN"]
    hostile = 'model"} 1\nkeywheel_fake 9'
    metrics = m.Metrics()
    metrics.on_attempt(AttemptFinished("p", "k", "ok", 200, 5.0, None, hostile))
    (sample,) = [
        s
        for s in families(metrics.render(EMPTY))["gen_ai_client_operation_duration_seconds"].samples
        if s.name.endswith("count")
    ]
    assert sample.labels["gen_ai_request_model"] == hostile and "keywheel_fake" not in families(metrics.render(EMPTY))


def test_histograms_bucket_at_the_semconv_bounds_inclusively() -> None:
    hist = m.Histogram(m.DURATION_BUCKETS)
    for value in (0.01, 0.0100001, 81.92, 100.0):
        hist.observe(value)
    assert hist.counts[0] == 1 and hist.counts[1] == 1 and hist.counts[-2] == 1 and hist.counts[-1] == 1
    assert hist.count == 4 and hist.sum == pytest.approx(0.01 + 0.0100001 + 81.92 + 100.0)


def test_models_past_the_series_cap_count_as_other_and_ops_routes_are_not_requests() -> None:
    metrics = m.Metrics()
    for i in range(m.MAX_SERIES + 5):
        metrics.on_attempt(AttemptFinished("p", "k", "ok", 200, 1.0, Usage(1, 2), f"model-{i}"))
    assert len(metrics.durations) == m.MAX_SERIES + 1
    assert metrics.durations[("p", "other", "")].count == 5
    assert metrics.tokens[("p", "other", "")][1].sum == 10
    for path in ("/health", "/metrics", "/status", "/", "/admin/keys/add"):
        metrics.on_request(RequestFinished("i", "GET", path, "openai", None, None, None, 0, 200, 1.0, 0, 0))
    assert metrics.requests == {} and metrics.request_attempts.count == 0
    metrics.on_request(RequestFinished("i", "POST", "/v1/messages", "anthropic", "m", "p", "k", 2, 200, 1.0, 0, 0))
    metrics.on_probe(ProbeFinished("p", "k", "invalid", 3.0, "", True))
    sample = metrics.sample()
    assert sample["requests"] == {("anthropic", 200): 1} and sample["probes"] == {("p", "invalid"): 1}
    assert sample["request_attempts"][1] == 2.0 and len(sample["durations"]) == m.MAX_SERIES + 1


def test_status_gauges_read_rests_credits_windows_and_unknown_states() -> None:
    now = time.time()
    keys = (
        CreditKey("p#1 …aaaa", "cooling", "rate limited", rest_until=now + 12, credit=Credit(4.5)),
        CreditKey("p#2 …bbbb", "low-credit", "credit under the minimum", credit={"remaining": 0.25}),
        CreditKey("p#3 …cccc", "active", credit=Credit(None)),  # unlimited: no credit gauge
        CreditKey("p#4 …dddd", "active", credit=7),
        CreditKey("p#5 …eeee", "active", credit=True),  # not a number
    )
    windows = ({"group": "paid", "window": "rpm", "used": 0.5}, {"group": "free", "window": "day", "used": None})
    status = status_of(WindowedProvider("p", "openai", "x", keys=keys, windows=windows))
    metrics = m.Metrics()
    got = families(metrics.render(status))
    states = {(s.labels["key"], s.labels["state"]): s.value for s in got["keywheel_key_state"].samples}
    assert states[("p#2 …bbbb", "low-credit")] == 1 and states[("p#2 …bbbb", "active")] == 0
    assert len(states) == 5 * 3 + 1
    rests = {s.labels["key"]: s.value for s in got["keywheel_key_rest_seconds"].samples}
    assert 11 < rests["p#1 …aaaa"] <= 12 and rests["p#2 …bbbb"] == 0
    credits = {s.labels["key"]: s.value for s in got["keywheel_credit_remaining"].samples}
    assert credits == {"p#1 …aaaa": 4.5, "p#2 …bbbb": 0.25, "p#4 …dddd": 7.0}
    (window,) = got["keywheel_window_used"].samples
    assert window.labels == {"provider": "p", "group": "paid", "window": "rpm"} and window.value == 0.5
    plain = families(m.Metrics().render(EMPTY))
    assert "keywheel_window_used" not in plain and "keywheel_credit_remaining" not in plain


def test_metrics_subscribe_and_unsubscribe_and_turn_off() -> None:
    observer = Observer()
    assert m.metrics_for(observer, False) is None
    assert not observer.attempts and not observer.requests and not observer.probes
    metrics = m.Metrics()
    undo = metrics.subscribe(observer)
    observer.emit(AttemptFinished("p", "k", "Overloaded", 529, 20.0, None, "x"))
    assert metrics.durations[("p", "x", "Overloaded")].count == 1
    undo()
    assert not observer.attempts and not observer.requests and not observer.probes


def test_settings_read_the_operations_switches() -> None:
    base = {"GEMINI_API_KEY_1": "test-gemini-key-1"}
    settings = settings_from_env(base)
    assert (settings.metrics, settings.metrics_public, settings.log_format) == (True, False, "text")
    settings = settings_from_env(
        {**base, "KEYWHEEL_METRICS": "off", "KEYWHEEL_METRICS_PUBLIC": "yes", "KEYWHEEL_LOG_FORMAT": "JSON"}
    )
    assert (settings.metrics, settings.metrics_public, settings.log_format) == (False, True, "json")
    with pytest.raises(ConfigError) as bad:
        settings_from_env({**base, "KEYWHEEL_LOG_FORMAT": "xml", "KEYWHEEL_METRICS": "maybe"})
    assert set(bad.value.problems) == {"KEYWHEEL_LOG_FORMAT", "KEYWHEEL_METRICS"}


def record(msg: str, *args: object, **fields: Any) -> logging.LogRecord:
    rec = logging.LogRecord("keywheel.test", logging.WARNING, __file__, 1, msg, args, None)
    if fields:
        setattr(rec, FIELDS, fields)
    return rec


def test_json_formatter_one_object_per_line_with_fields_redacted() -> None:
    secret = "Zq8wLm3Tx9Vb2Nc4"
    redactor = register(Redactor([secret]))  # registered while referenced
    fmt, clean = JsonFormatter(), RedactingFilter()  # as a handler runs them: the filter, then the format
    model, path = f"x{secret}", "/p?key=abc"
    rec = record("a\nb %s %s %d", model, path, 2, model=model, attempts=2, path=path)
    assert clean.filter(rec)
    line = fmt.format(rec)
    assert "\n" not in line
    data = json.loads(line)
    assert data["msg"].startswith("a\\nb x[redacted] /p?key=[redacted]") and data["attempts"] == 2
    assert secret not in line and "abc" not in data["path"] and data["model"] == "x[redacted]"
    assert data["ts"].endswith("Z") and data["logger"] == "keywheel.test" and data["level"] == "WARNING"
    plain = record("model=%s", "gpt-x", model="gpt-x")  # nothing to redact: the fields as they are
    assert clean.filter(plain) and json.loads(fmt.format(plain))["model"] == "gpt-x"
    try:
        raise ValueError(f"boom {secret}")
    except ValueError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), __import__("sys").exc_info())
    rec.stack_info = "Stack (most recent call last): here"
    data = json.loads(fmt.format(rec))
    assert "ValueError" in data["exc"] and secret not in data["exc"] and data["stack"].startswith("Stack")
    assert isinstance(formatter("text"), logging.Formatter) and not isinstance(formatter("text"), JsonFormatter)
    del redactor


def test_key_state_log_names_each_change_once(caplog: pytest.LogCaptureFixture) -> None:
    until = time.time() + 30
    events = [
        KeyStateChanged("p", "p#1 …aaaa", "active", "cooling", "rate limited", until),
        KeyStateChanged("p", "p#1 …aaaa", "cooling", "active", "", None),
        KeyStateChanged("p", "p#2 …bbbb", "active", "disabled", "invalid key", None),
        KeyStateChanged("p", "p#2 …bbbb", "disabled", "active", "", None),
        KeyStateChanged("p", "p#3 …cccc", "active", "low-credit", "credit 0.10 under 0.50", None),
        KeyStateChanged("p", "p#4 …dddd", "active", "removed", "", None),
    ]
    with caplog.at_level(logging.INFO, logger="keywheel.keys"):
        for event in events:
            key_state_log(event)
        key_state_log(AttemptFinished("p", "k", "ok", 200, 1.0))  # not a key-state change: nothing
    messages = [r.getMessage() for r in caplog.records]
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until))
    assert messages == [
        f"key p#1 ...aaaa rests until {iso} (epoch {until:.0f}) (was active): rate limited",
        "key p#1 ...aaaa is active again (was cooling)",
        "key p#2 ...bbbb disabled (was active): invalid key",
        "key p#2 ...bbbb recovered (was disabled)",
        "key p#3 ...cccc low-credit (was active): credit 0.10 under 0.50",
        "key p#4 ...dddd removed (was active)",
    ]
    assert [r.levelname for r in caplog.records] == ["INFO", "INFO", "WARNING", "INFO", "WARNING", "INFO"]
    assert getattr(caplog.records[0], FIELDS)["until_iso"] == iso
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="keywheel.keys"):
        key_state_log(events[2])
    assert not caplog.records


def test_access_line_carries_the_request(caplog: pytest.LogCaptureFixture) -> None:
    event = RequestFinished(
        "kw-1",
        "POST",
        "/v1/messages",
        "anthropic",
        "m-1",
        "gemini",
        "gemini#1 …ab12",
        2,
        200,
        12.34,
        10,
        20,
        Usage(5, 7),
    )
    with caplog.at_level(logging.INFO, logger="keywheel.access"):
        access_log(event)
        access_log(event._replace(provider=None, key=None, model=None, usage=None, status=404, attempts=0))
    first, second = (r.getMessage() for r in caplog.records)
    assert first == (
        "POST /v1/messages 200 gemini gemini#1 ...ab12 dialect=anthropic model=m-1 attempts=2 tokens=5+7 id=kw-1 12.3ms"
    )
    assert second == "POST /v1/messages 404 dialect=anthropic model=- attempts=0 id=kw-1 12.3ms"
    fields = getattr(caplog.records[0], FIELDS)
    assert (fields["tokens_in"], fields["tokens_out"], fields["key"]) == (5, 7, "gemini#1 ...ab12")
