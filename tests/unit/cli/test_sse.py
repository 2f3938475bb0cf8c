"""The SSE parser against the event-stream grammar, fed in every possible chunking."""

from __future__ import annotations

import pytest

from cli.sse import SseComment, SseEvent, SseParser

STREAM = (
    b"retry: 2000\n"
    b": connected\n\n"
    b'id: 41\ndata: {"type":"build.log","lines":["caf\xc3\xa9"]}\n\n'
    b": keepalive\n\n"
    b"id: 42\r\ndata: first\r\ndata:second\r\n\r\n"
    b"event: custom\rdata:  two spaces\r\r"
    b"id: 43\n\n"
    b"data\n\n"
)
EXPECTED = [
    SseEvent(data='{"type":"build.log","lines":["café"]}', id="41"),
    SseEvent(data="first\nsecond", id="42"),
    SseEvent(data=" two spaces", event="custom", id="42"),
    SseEvent(data="", id="43"),
]


def parse(chunks: list[bytes]) -> tuple[list[SseEvent], SseParser]:
    parser = SseParser()
    events = [event for chunk in chunks for event in parser.feed(chunk)]
    return events, parser


def test_whole_stream() -> None:
    events, parser = parse([STREAM])
    assert events == EXPECTED
    assert parser.last_event_id == "43"
    assert parser.retry_ms == 2000


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_anywhere_in_two(cut: int) -> None:
    # Includes cuts inside "\r\n", inside the UTF-8 "é" and inside field names.
    events, _ = parse([STREAM[:cut], STREAM[cut:]])
    assert events == EXPECTED


def test_byte_by_byte() -> None:
    events, _ = parse([bytes([b]) for b in STREAM])
    assert events == EXPECTED


def test_comments_and_id_only_blocks_dispatch_nothing() -> None:
    events, parser = parse([b": hello\n\nid: 7\n\nevent: x\n\n"])
    assert events == []
    assert parser.last_event_id == "7"


def test_an_event_without_its_blank_line_is_not_dispatched() -> None:
    events, _ = parse([b"id: 1\ndata: partial\n"])
    assert events == []


def test_byte_order_mark_only_at_the_start() -> None:
    events, _ = parse([b"\xef\xbb\xbfdata: a\n\n", b"data: \xef\xbb\xbfb\n\n"])
    assert [e.data for e in events] == ["a", "\ufeffb"]


def test_unknown_fields_and_bad_retry_are_ignored() -> None:
    events, parser = parse([b"foo: bar\nretry: soon\ndata: x\n\n"])
    assert events == [SseEvent(data="x")]
    assert parser.retry_ms is None


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_comments_when_asked_come_in_stream_order(cut: int) -> None:
    parser = SseParser(comments=True)
    items = [item for chunk in (STREAM[:cut], STREAM[cut:]) for item in parser.feed(chunk)]
    assert items == [SseComment("connected"), EXPECTED[0], SseComment("keepalive"),
                     *EXPECTED[1:]]
