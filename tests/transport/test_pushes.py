"""Pushes to watchers (mirrors subscribed with mutation records): what they are told, and that an applied change
always reaches them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from tr_util import RawPeer, until

from machine import Machine, State
from transport import Endpoint, RemoteMachine, connect, expose

SCHEMA = {"Exception": State(multi=True), "Foo": State(), "Bar": State(), "Multi": State(multi=True)}


@pytest.fixture
def served() -> Iterator[tuple[Machine, Endpoint]]:
    m = Machine(SCHEMA, id="m")
    ep = expose(m)
    yield m, ep
    ep.stop()


@pytest.fixture
def watcher(served: tuple[Machine, Endpoint]) -> Iterator[tuple[RemoteMachine, list[dict[str, Any]]]]:
    with connect(served[1].address) as c:
        rm = c.machine("m", mutations=True)
        got: list[dict[str, Any]] = []
        rm.on_update(got.append)
        yield rm, got


def records(got: list[dict[str, Any]]) -> list[tuple[list[str], Any]]:
    return [(mu["called"], mu["args"]) for u in got for mu in u["mutations"]]


def test_a_dry_run_is_not_reported_to_watchers(served, watcher) -> None:
    """can_add with args was recorded as a mutation, with the clock the real add then reached: the watcher got
    the dry run's args on the next real add of that state."""
    m, ep = served
    rm, got = watcher
    with connect(ep.address) as other:
        mirror = other.machine("m")
        assert mirror.can_add("Foo", args={"dry": 1}) == 0
        mirror.add("Foo", args={"real": 1})
    assert m.can_add("Multi", args={"dry": 2}) == 0  # a local one too
    m.add("Multi", args={"real": 2})
    assert until(lambda: len(records(got)) >= 2)
    assert records(got) == [(["Foo"], {"real": 1}), (["Multi"], {"real": 2})]


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_args_whose_repr_raises_are_applied_and_pushed(served, watcher) -> None:
    """The record's sanitising raised in the tracer, so the change was applied and never pushed to watchers."""
    m, _ = served
    rm, got = watcher
    m.add("Multi", args={"x": BadRepr(), "n": 1})
    assert until(lambda: rm.tick("Multi") == 1, timeout=3)
    assert until(lambda: len(records(got)) == 1, timeout=3)
    (called, args), = records(got)
    assert called == ["Multi"] and args["n"] == 1 and "BadRepr" in args["x"]


def test_deeply_nested_args_from_a_client_are_applied_and_pushed(served, watcher) -> None:
    """1000-deep args from a client: applied, then the record's repr hit the recursion limit: never pushed."""
    m, ep = served
    rm, got = watcher
    head = b"\x94" + msgpack.packb("add") + msgpack.packb(5) + msgpack.packb("m")
    body = (b"\x82" + msgpack.packb("s") + msgpack.packb(["Multi"]) + msgpack.packb("a") + b"\x81"
            + msgpack.packb("k") + b"\x91" * 1000 + b"\xc0")
    peer = RawPeer(ep.address)
    try:
        peer.send_raw(head + body)
        reply = peer.reply(5)
        assert reply is not None and reply[0] == "ok", reply
    finally:
        peer.close()
    assert m.tick("Multi") == 1
    assert until(lambda: rm.tick("Multi") == 1, timeout=3)
    assert until(lambda: len(records(got)) == 1, timeout=3)
    assert records(got)[0][0] == ["Multi"]
