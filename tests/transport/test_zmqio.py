"""The wake pipe shared by the endpoint's loop and the client reactor, with real threads and real fds."""

from __future__ import annotations

import os
import select
import threading
import time

from transport.zmqio import WakePipe


def test_a_wake_after_close_never_writes_into_a_file_that_reused_the_fd() -> None:
    """Threads keep waking a pipe while another thread closes it; the fd numbers are then handed to a new pipe at
    once (the kernel gives the lowest free numbers). No late wake may write into that new pipe."""
    p = WakePipe()
    old_w = p._w
    wakes = [0] * 4
    stop = threading.Event()

    def waker(i: int) -> None:
        while not stop.is_set():
            p.wake()  # (a few thousand bytes in all: the pipe never fills)
            wakes[i] += 1

    threads = [threading.Thread(target=waker, args=(i,), daemon=True) for i in range(len(wakes))]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 10
        while min(wakes) < 100:  # every thread is inside its loop
            assert time.monotonic() < deadline, wakes
            time.sleep(0.001)
        p.close()
        r, w = os.pipe()
        try:
            assert w == old_w, "the fd was not reused: the test cannot show the fault"
            seen = list(wakes)
            while any(n < s + 100 for n, s in zip(wakes, seen, strict=True)):  # each thread woke 100 times more since
                assert time.monotonic() < deadline, wakes
                time.sleep(0.001)
            stop.set()
            for t in threads:
                t.join(5)
            assert not select.select([r], [], [], 0)[0], "a wake after close() wrote into the new pipe"
        finally:
            os.close(r)
            os.close(w)
    finally:
        stop.set()
        for t in threads:
            t.join(5)


def test_a_drain_after_close_never_reads_from_a_file_that_reused_the_fd() -> None:
    p = WakePipe()
    old_r = p.fd
    p.wake()
    p.close()
    r, w = os.pipe()
    try:
        os.set_blocking(r, False)
        assert r == old_r, "the fd was not reused: the test cannot show the fault"
        os.write(w, b"data")
        p.drain()
        p.wake()
        assert os.read(r, 100) == b"data"
        p.close()  # twice: nothing left to close
    finally:
        os.close(r)
        os.close(w)
