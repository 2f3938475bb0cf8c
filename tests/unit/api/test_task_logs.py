"""The pure parts of reading task logs: tails, Nomad's frames, line splitting, which allocs."""

from __future__ import annotations

import base64
import json

import pytest

from services.api.routes.logs import MAX_LINE_BYTES, LineSplitter, _lines
from services.api.task_logs import FrameDecoder, last_lines, pick_allocations


@pytest.mark.parametrize(("data", "count", "expected"), [
    (b"a\nb\nc\n", 2, b"b\nc\n"),
    (b"a\nb\nc", 2, b"b\nc"),  # the last line is still being written
    (b"a\nb\n", 5, b"a\nb\n"),
    (b"cut-off-start\nb\n", 1, b"b\n"),
    (b"", 3, b""),
    (b"a\n", 0, b""),
    (b"\n\n", 1, b"\n"),
])
def test_last_lines(data: bytes, count: int, expected: bytes) -> None:
    assert last_lines(data, count) == expected


def test_tail_lines_keep_empty_lines_and_drop_only_the_final_newline() -> None:
    assert _lines(b"a\n\nb\n") == [b"a", b"", b"b"]
    assert _lines(b"a\nb") == [b"a", b"b"]
    assert _lines(b"") == []


def frame(data: bytes, offset: int) -> bytes:
    return json.dumps({"File": "alloc/logs/app.stdout.0", "Offset": offset,
                       "Data": base64.b64encode(data).decode()}).encode()


def test_frames_split_anywhere_and_heartbeats_skipped() -> None:
    stream = frame(b"hello\n", 6) + b"{}" + b"\n" + frame(b"world\n", 12) + frame(b"!", 13)
    for cut in range(1, len(stream)):
        decoder = FrameDecoder()
        frames = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        data = [base64.b64decode(f["Data"]) for f in frames if f.get("Data")]
        assert data == [b"hello\n", b"world\n", b"!"], cut
        assert [f.get("Offset") for f in frames if f.get("Data")] == [6, 12, 13]


def test_line_splitter_waits_for_the_newline_and_cuts_giant_lines() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"par") == []
    assert splitter.feed(b"tial\nnext") == [b"partial"]
    assert splitter.flush() == [b"next"]
    assert splitter.flush() == []
    giant = splitter.feed(b"x" * (MAX_LINE_BYTES * 2 + 5))
    assert [len(p) for p in giant] == [MAX_LINE_BYTES, MAX_LINE_BYTES]
    assert splitter.flush() == [b"x" * 5]


def test_running_allocations_first_else_the_latest_terminal_one() -> None:
    def alloc(id_: str, client: str, desired: str = "run", create: int = 1,
              modify: int = 1, version: int = 1) -> dict[str, object]:
        return {"ID": id_, "ClientStatus": client, "DesiredStatus": desired,
                "CreateIndex": create, "ModifyIndex": modify, "JobVersion": version}

    running = [alloc("b", "running", create=5), alloc("a", "pending", create=3),
               alloc("c", "failed", version=0), alloc("d", "running", desired="stop")]
    assert [a["ID"] for a in pick_allocations(running)] == ["a", "b"]
    # A crash-looping instance Nomad replaced: the latest failed one of the running
    # version comes first, so its last words show; older failures do not.
    replaced = [alloc("new", "pending", create=9), alloc("f1", "failed", modify=4),
                alloc("f2", "failed", modify=8), alloc("old", "failed", modify=9, version=0)]
    assert [a["ID"] for a in pick_allocations(replaced)] == ["f2", "new"]
    crashed = [alloc("x", "failed", modify=7), alloc("y", "failed", modify=9),
               alloc("z", "complete", modify=8)]
    assert [a["ID"] for a in pick_allocations(crashed)] == ["y"]
    assert pick_allocations([]) == []
