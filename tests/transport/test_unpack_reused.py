"""``protocol.unpack`` reads small frames through an Unpacker kept per thread: every malformed frame still gets a
FrameError (never a crash, never a wrong message), and a good frame after it decodes, on one thread and on many."""

from __future__ import annotations

import threading

import msgpack
import pytest

from transport import protocol as P

GOOD = P.pack(P.CLK, 0, "b0", [[0], [2], 5, 6, 1])
BAD = [
    b"",  # nothing
    b"\xc1",  # a byte msgpack never uses
    GOOD[:-1],  # truncated: what it buffered must not prefix the next frame
    GOOD + b"\x00",  # bytes after the message
    GOOD + GOOD,  # two messages in one frame
    msgpack.packb({1: 2}),  # an int map key
    msgpack.packb([msgpack.ExtType(1, b"x"), 0, None, 0]),  # an ext type
    b"\xdd\xff\xff\xff\xff",  # an array of 2**32 - 1 items announced
    msgpack.packb(["k", 1, "m", list(range(P.MAX_ITEMS + 1))]),  # past MAX_ITEMS, and larger than the reused buffer
    msgpack.packb([1, 2, 3, 4]),  # a bad envelope
]


@pytest.mark.parametrize("bad", BAD)
def test_a_malformed_frame_gets_a_frame_error_and_the_next_good_one_decodes(bad: bytes) -> None:
    with pytest.raises(P.FrameError):
        P.unpack(bad)
    assert P.unpack(GOOD) == ("clk", 0, "b0", [[0], [2], 5, 6, 1])


def test_frames_larger_than_the_reused_buffer_decode() -> None:
    big = P.pack(P.OK, 7, None, "x" * (P._REUSED_MAX + 10))
    assert P.unpack(big)[3] == "x" * (P._REUSED_MAX + 10)
    assert P.unpack(GOOD)[0] == "clk"


def test_threads_decoding_good_and_bad_frames_at_once_each_get_their_own_results() -> None:
    errors: list[str] = []
    barrier = threading.Barrier(4)

    def run(k: int) -> None:
        try:
            barrier.wait(10)
            mine = P.pack(P.CLK, k, f"m{k}", [[k], [2], k, k, k])
            for i in range(2000):
                if i % 3 == 0:
                    try:
                        P.unpack(BAD[(i + k) % len(BAD)])
                        errors.append("a bad frame decoded")
                    except P.FrameError:
                        pass
                if P.unpack(mine) != ("clk", k, f"m{k}", [[k], [2], k, k, k]):
                    errors.append(f"thread {k} read another frame")
        except Exception as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert not errors, errors[:3]
