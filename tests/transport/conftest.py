"""Fixtures for transport tests: real daemon processes on loopback, real sockets."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from tr_util import Daemon


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
