"""The server's record of seen seqs: bounded whatever the seq values, exact in its gaps, never applying a
mutation twice and never calling one 'duplicate' that was not applied (also for a Client shared by threads)."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from tr_util import RawPeer

from machine import Machine, Result, State
from transport import Endpoint, connect
from transport import protocol as P
from transport.server.sessions import MAX_GAPS

SCHEMA = {"Exception": State(multi=True), "Multi": State(multi=True)}
MULTI = {"s": ["Multi"]}


def code(reply: list[Any] | None) -> str:
    assert reply is not None, "no reply"
    return "ok" if reply[0] == "ok" else str(reply[3]["code"])


def test_the_record_of_seqs_is_bounded_whatever_the_seq_values(served) -> None:
    """A first seq of 10**9 cost ~0.84 MB per identity, and every seq jump of 10,001 rebuilt a set of 10,000."""
    m, ep = served
    peers = [RawPeer(ep.address) for _ in range(20)]
    try:
        assert code(peers[0].request("ping", 1, None, {})) == "ok"  # the endpoint's own set-up is done
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for p in peers:
                assert code(p.request("ping", 10**9, None, {})) == "ok"
            seq = 10**9
            for _ in range(300):  # one identity jumping far on every frame
                seq += 10_001
                assert code(peers[0].request("ping", seq, None, {})) == "ok"
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 1_000_000, f"{grown:,} bytes for 20 sessions"
        # and it still tells: the last seq was seen, one just below it (a gap) was not
        assert code(peers[0].request("add", seq, "m", MULTI)) == P.DUPLICATE
        assert code(peers[0].request("add", seq - 1, "m", MULTI)) == "ok"
        assert code(peers[0].request("add", seq - 1, "m", MULTI)) == "ok"  # from the reply cache
        assert m.tick("Multi") == 1
    finally:
        for p in peers:
            p.close()


def test_a_skipped_seq_far_below_the_top_is_applied_once(served, raw_peer) -> None:
    """Seqs more than 10,000 below the highest one counted as seen: a mutation sent late by another thread of the
    same client got 'duplicate' and was never applied."""
    m, _ = served
    assert code(raw_peer.request("ping", 30_000, None, {})) == "ok"
    assert code(raw_peer.request("add", 7, "m", MULTI)) == "ok"
    assert m.tick("Multi") == 1
    for seq in range(100, 100 + P.REPLY_CACHE):  # push seq 7's result out of the reply cache
        assert code(raw_peer.request("add", seq, "m", {"s": ["Exception"]})) == "ok"
    assert code(raw_peer.request("add", 7, "m", MULTI)) == P.DUPLICATE  # applied already: never again
    assert m.tick("Multi") == 1


def test_forgotten_seqs_are_refused_as_stale_not_as_duplicate(served, raw_peer) -> None:
    m, _ = served
    seq = 1
    for _ in range(MAX_GAPS + 1):  # each jump leaves a gap of one seq; the oldest is then forgotten
        seq += 2
        assert code(raw_peer.request("ping", seq, None, {})) == "ok"
    assert code(raw_peer.request("add", 2, "m", MULTI)) == P.STALE_SEQ  # forgotten: refused, not applied
    assert code(raw_peer.request("add", 4, "m", MULTI)) == "ok"  # the oldest gap still known
    assert m.tick("Multi") == 1


@pytest.fixture
def raw_peer(served: tuple[Machine, Endpoint]) -> Iterator[RawPeer]:
    peer = RawPeer(served[1].address)
    yield peer
    peer.close()


def test_a_client_shared_by_two_threads_applies_every_mutation(daemon) -> None:
    """Thread 1: mutate_many of 20,000 adds; thread 2: machines() in a loop. 2,000-10,000 results came back as
    'duplicate' and were never applied: thread 2's seqs, taken while thread 1 built its batch, reached the
    server first and put the batch's seqs more than 10,000 below the highest seq seen."""
    d = daemon("--hub")  # one endpoint: one READY line (tr_util.readline can miss lines read ahead together)
    n = 20_000
    start = int(d.cmd("time worker0").split()[1 + list(_names()).index("Multi")])
    with connect(d.addrs[0], timeout=60.0) as c:
        done = threading.Event()
        listed = [0]
        errors: list[BaseException] = []

        def lister() -> None:
            try:
                while not done.is_set():
                    c.machines()
                    listed[0] += 1
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        t = threading.Thread(target=lister)
        t.start()
        try:
            res = c.mutate_many([("worker0", "add", ["Multi"], None)] * n)
        finally:
            done.set()
            t.join(30)
        assert not errors, errors[:1]
        bad = [r for r in res if r != Result.EXECUTED]
        assert not bad, f"{len(bad)} of {n} failed, e.g. {bad[:1]!r} ({listed[0]} listings meanwhile)"
    ticks = d.cmd("time worker0").split()[1:]
    multi = int(ticks[list(_names()).index("Multi")])
    assert multi - start == 2 * n - (0 if start else 1)


def _names() -> list[str]:
    import daemon as dmod  # tests/transport/daemon.py: its schema's state order

    return list(dmod.SCHEMA)



