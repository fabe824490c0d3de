"""The access log's lines without records (``keywheel.logs.LineHandler``).

Under ``keywheel serve``'s own stderr handler, with nothing else on the way, the access line is
written straight to the handler: it must be the very line the handler's formatter writes for the
record the long way makes (text and JSON), come out in order with records, be batched within one
turn of the event loop and no longer, and give way to records as soon as anything else listens
(another handler, a filter, a formatter, a level).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from keywheel.logs import MAX_PENDING, LineHandler, line_handler, use_format
from keywheel.observe import RequestFinished, access, access_log
from keywheel.secrets import install_log_filter
from keywheel.types import Usage

EVENT = RequestFinished(
    "kw-1", "POST", "/v1/chat/completions", "openai", "m", "openrouter", "…ab12", 1, 200, 12.34, 10, 20, Usage(3, 4)
)
TEXT_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
JSON_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Seen(logging.Handler):
    """A foreign handler: it only collects the records it gets."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def stderr(tmp_path: Path) -> Iterator[tuple[LineHandler, Path]]:
    """A LineHandler on a file, as ``configure_logging`` sets one up; see :func:`alone`."""
    path = tmp_path / "stderr.log"
    with path.open("w", encoding="utf-8") as stream:
        yield LineHandler(stream), path


@contextlib.contextmanager
def alone(handler: LineHandler) -> Iterator[None]:
    """``handler`` the root logger's only one (pytest's capture handlers set aside meanwhile)."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    install_log_filter(handlers=[handler])
    use_format("text")
    try:
        yield
    finally:
        root.handlers, root.level = saved, level


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_direct_line_is_the_line_a_record_would_give(stderr: tuple[LineHandler, Path], fmt: str) -> None:
    handler, path = stderr
    with alone(handler):
        use_format(fmt)
        assert line_handler(access) is handler
        access_log(EVENT)  # outside a loop: written at once
        seen = Seen()
        logging.getLogger().addHandler(seen)  # someone else listens: the long way, a record
        assert line_handler(access) is None
        access_log(EVENT)
        logging.getLogger().removeHandler(seen)
        assert len(seen.records) == 1 and seen.records[0].name == "keywheel.access"
        direct, recorded = lines(path)
        if fmt == "text":
            assert TEXT_STAMP.match(direct) and TEXT_STAMP.match(recorded)
            assert TEXT_STAMP.sub("", direct) == TEXT_STAMP.sub("", recorded)
            assert TEXT_STAMP.sub("", direct) == (
                "INFO keywheel.access: POST /v1/chat/completions 200 openrouter ...ab12 dialect=openai model=m "
                "attempts=1 tokens=3+4 id=kw-1 12.3ms"
            )
        else:
            one, two = json.loads(direct), json.loads(recorded)
            assert JSON_STAMP.match(one.pop("ts")) and JSON_STAMP.match(two.pop("ts"))
            assert one == two
            assert list(one)[:3] == ["level", "logger", "msg"] and one["tokens_out"] == 4 and one["key"] == "...ab12"


def test_lines_of_one_loop_turn_are_written_together_and_before_a_later_record(
    stderr: tuple[LineHandler, Path],
) -> None:
    handler, path = stderr
    with alone(handler):

        async def main() -> None:
            for n in range(3):
                handler.line("keywheel.access", f"line {n}", None)
            assert lines(path) == []  # held for the end of this turn of the loop
            logging.getLogger("keywheel.gateway").warning("a record")  # ... or for a record: after them
            assert [line.split(": ", 1)[1] for line in lines(path)] == ["line 0", "line 1", "line 2", "a record"]
            handler.line("keywheel.access", "line 3", None)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            assert lines(path)[-1].endswith("INFO keywheel.access: line 3")
            for n in range(MAX_PENDING):  # a full batch is not held
                handler.line("keywheel.access", f"batch {n}", None)
            assert lines(path)[-1].endswith(f"batch {MAX_PENDING - 1}")

        asyncio.run(main())


def test_anything_else_on_the_way_sends_the_line_the_long_way(stderr: tuple[LineHandler, Path]) -> None:
    handler, _ = stderr
    with alone(handler):
        assert line_handler(access) is handler
        foreign = logging.Filter("keywheel")
        access.addFilter(foreign)
        assert line_handler(access) is None
        access.removeFilter(foreign)
        handler.addFilter(foreign)
        assert line_handler(access) is None
        handler.removeFilter(foreign)
        handler.setLevel(logging.WARNING)
        assert line_handler(access) is None
        handler.setLevel(logging.NOTSET)
        own = handler.formatter
        handler.setFormatter(logging.Formatter("%(message)s"))  # a formatter of someone else's
        assert line_handler(access) is None
        handler.setFormatter(own)
        assert line_handler(access) is handler
        access.propagate = False
        try:
            assert line_handler(access) is None  # no handler reached at all
        finally:
            access.propagate = True


def test_a_stream_without_a_descriptor_and_a_new_stream(stderr: tuple[LineHandler, Path]) -> None:
    handler, path = stderr
    with alone(handler):
        memory = io.StringIO()
        old = handler.setStream(memory)
        assert old is not None
        handler.line("keywheel.access", "to memory", None)
        assert memory.getvalue().endswith("INFO keywheel.access: to memory\n")
        assert handler.setStream(old) is memory
        handler.line("keywheel.access", "to the file", None)
        assert lines(path)[-1].endswith("to the file")
        memory.close()
        handler.setStream(memory)
        handler.line("keywheel.access", "to a closed stream", None)  # dropped, as logging drops it: no raise
        handler.setStream(old)
