"""Fixtures for transport tests: real daemon processes on loopback, real sockets."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from tr_util import Daemon, RawPeer

from machine import Machine
from transport import Endpoint, expose


@pytest.fixture
def daemon() -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(*args: str) -> Daemon:
        d = Daemon(*args)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Machine, Endpoint]]:
    """The test module's SCHEMA as machine "m", exposed on a free loopback port."""
    m = Machine(request.module.SCHEMA, id="m")
    ep = expose(m)
    yield m, ep
    ep.stop()


@pytest.fixture
def raw(served: tuple[Machine, Endpoint]) -> Iterator[RawPeer]:
    """A raw DEALER on the served endpoint (frames as the test writes them)."""
    peer = RawPeer(served[1].address)
    yield peer
    peer.close()
