"""keywheel.ops.shared_metrics in process: workers' counts written to one directory and summed by
any worker's scrape (the end-to-end run with real workers is tests/gateway/test_workers_reload.py);
and the reload summary a worker of ``--workers N`` answers before its parent restarts it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from keywheel.config import settings_from_env
from keywheel.gateway.reload import planned
from keywheel.observe import AttemptFinished, Observer, ProbeFinished, RequestFinished
from keywheel.ops import metrics as m
from keywheel.ops.shared_metrics import SUFFIX, WRITE_DELAY, WorkerMetrics, encode, process_metrics
from keywheel.status import Status
from keywheel.types import Usage

EMPTY = Status("p", ("p",), (), time.time())


def _events(metrics: m.Metrics, requests: int) -> None:
    for _ in range(requests):
        metrics.on_attempt(AttemptFinished("p", "k", "ok", 200, 30.0, Usage(3, 5), "model"))
        metrics.on_request(RequestFinished("i", "POST", "/v1/chat", "openai", "m", "p", "k", 1, 200, 1, 0, 0))
    metrics.on_probe(ProbeFinished("p", "k", "ok", 3.0, "", True))


def _values(text: bytes) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if not sample.labels.get("le") or sample.labels["le"] == "+Inf":
                out[sample.name] = out.get(sample.name, 0) + sample.value
    return out


def test_every_workers_scrape_sums_the_counts_of_all(tmp_path: Path) -> None:
    one, two = WorkerMetrics(str(tmp_path)), WorkerMetrics(str(tmp_path))
    _events(one, 3)  # no running loop: each event is written at once
    _events(two, 4)
    alone = m.Metrics()
    _events(alone, 7)
    alone.on_probe(ProbeFinished("p", "k", "ok", 3.0, "", True))
    expected = _values(alone.render(EMPTY))
    assert expected["keywheel_requests_total"] == 7 and expected["gen_ai_client_token_usage_sum"] == 56
    assert _values(one.render(EMPTY)) == expected == _values(two.render(EMPTY))
    assert len(list(tmp_path.glob("*" + SUFFIX))) == 2


def test_a_worker_writes_its_counts_soon_after_events_on_its_loop(tmp_path: Path) -> None:
    worker, reader = WorkerMetrics(str(tmp_path)), WorkerMetrics(str(tmp_path))

    async def burst() -> float:
        _events(worker, 5)  # one write is scheduled for the burst
        before = _values(reader.render(EMPTY)).get("keywheel_requests_total", 0)
        await asyncio.sleep(WRITE_DELAY * 3)
        return before

    assert asyncio.run(burst()) == 0
    assert _values(reader.render(EMPTY))["keywheel_requests_total"] == 5
    worker.on_request(RequestFinished("i", "POST", "/v1/messages", "anthropic", "m", "p", "k", 1, 429, 1, 0, 0))
    worker.flush()  # a stopping worker's last counts
    assert _values(reader.render(EMPTY))["keywheel_requests_total"] == 6


def test_unreadable_or_foreign_files_are_left_out(tmp_path: Path) -> None:
    worker = WorkerMetrics(str(tmp_path))
    _events(worker, 2)
    (tmp_path / ("garbage" + SUFFIX)).write_bytes(b"{not json")
    foreign: dict[str, Any] = {
        "durations": {("p", "model", ""): ([1, 2], 0.5, 3)},  # another bucket layout
        "tokens": {},
        "requests": {("openai", 200): 10},
        "request_attempts": ([1], 1.0),
        "probes": {},
    }
    (tmp_path / ("foreign" + SUFFIX)).write_bytes(encode(foreign))
    values = _values(worker.render(EMPTY))
    assert values["keywheel_requests_total"] == 12  # its requests count; its histograms do not
    assert values["gen_ai_client_operation_duration_seconds_count"] == 2
    assert values["keywheel_request_attempts_count"] == 2
    assert orjson.loads(encode(foreign))["requests"] == [[["openai", 200], 10]]


def test_the_parent_sets_the_directory_and_metrics_for_uses_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYWHEEL_METRICS_DIR", str(tmp_path))
    metrics = m.metrics_for(Observer(), True, process_metrics)
    assert isinstance(metrics, WorkerMetrics)
    monkeypatch.delenv("KEYWHEEL_METRICS_DIR")
    plain = m.metrics_for(Observer(), True, process_metrics)
    assert type(plain) is m.Metrics and plain is not None
    plain.flush()  # nothing to keep for one process
    assert list(tmp_path.iterdir()) == []  # the worker has counted nothing yet


def test_the_reload_summary_of_a_worker_names_added_removed_and_kept_keys() -> None:
    old = settings_from_env({"GEMINI_API_KEY_1": "test-gemini-key-1", "GEMINI_API_KEY_2": "test-gemini-key-2"})
    new = settings_from_env({"GEMINI_API_KEY_1": "test-gemini-key-1", "OPENROUTER_API_KEY_1": "test-openrouter-key-1"})
    summary = planned(old, new)
    assert summary["kept"] == 1 and summary["reloaded"] is True
    assert [f.split()[0] for f in summary["added"]] == ["openrouter#1"]
    assert [f.split()[0] for f in summary["removed"]] == ["gemini#2"]
    assert summary["chain"] == list(new.chain)
