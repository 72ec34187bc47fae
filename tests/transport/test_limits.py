"""Limits on what a client sends, on every request kind, and clipping of what it sent in logs and error replies."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from machine import State
from transport import protocol as P

SCHEMA = {"Exception": State(multi=True), "Foo": State(), "Multi": State(multi=True)}
BIG = "x" * (P.MAX_ARGS_BYTES + 10)


def code(reply: list[Any] | None) -> str:
    assert reply is not None, "no reply"
    return "ok" if reply[0] == "ok" else str(reply[3]["code"])


@pytest.mark.parametrize("kind, body", [
    ("when_args", {"state": "Foo", "args": {"k": BIG}, "token": 1}),
    ("can", {"s": ["Foo"], "a": {"k": BIG}}),
    ("add_err", {"state": "Exception", "msg": "m", "a": {"k": BIG}}),
    ("add_err", {"state": "Exception", "msg": BIG}),
    ("add", {"s": ["Foo"], "a": {"k": BIG}}),
    ("when_args", {"state": "Foo", "args": {}, "token": "t" * 1000}),
])
def test_every_request_kind_obeys_the_size_limits(served, raw, kind, body) -> None:
    """when_args, can and add_err had no size check: 256 x 8 MB of when_args took a server to 3.1 GB."""
    m, _ = served
    before = m.time()
    assert code(raw.request(kind, 3, "m", body, timeout=5)) == P.LIMIT
    assert m.time() == before


def test_pending_when_args_of_a_session_are_bounded_in_bytes(served, raw) -> None:
    near = {"k": "y" * (P.MAX_ARGS_BYTES - 100)}
    codes = [code(raw.request("when_args", seq, "m", {"state": "Foo", "args": near, "token": seq}, timeout=5))
             for seq in range(1, 10)]
    fits = P.MAX_WHEN_ARGS_BYTES // P.MAX_ARGS_BYTES
    assert codes == ["ok"] * fits + [P.LIMIT] * (9 - fits)
    # a cancelled waiter frees its share
    raw.send("when_args_cancel", 0, "m", {"token": 1})
    assert code(raw.request("when_args", 20, "m", {"state": "Foo", "args": near, "token": 20}, timeout=5)) == "ok"


def test_remote_values_are_clipped_in_logs_and_error_replies(served, raw, caplog) -> None:
    """10 hello frames of 15 MiB wrote 157 MB to stderr: the unsupported version was logged in full."""
    huge = "v" * (4 * 1024 * 1024)
    with caplog.at_level(logging.DEBUG, logger="transport.server"):
        replies = [
            raw.request("hello", 1, None, {"proto": huge}, timeout=5),
            raw.request(huge, 2, None, {}, timeout=5),
            raw.request("add", 3, "m", {"s": [huge]}, timeout=5),
            raw.request("when_args", 4, "m", {"state": "Foo", "args": {}, "token": 7}, timeout=5),
            raw.request("when_args", 5, "m", {"state": "Foo", "args": {}, "token": 7}, timeout=5),
            raw.request("add", 6, "m", {"s": "not a list " + huge}, timeout=5),
        ]
    logged = sum(len(r.getMessage()) for r in caplog.records)
    assert logged < 20_000, f"{logged:,} characters logged"
    for r in replies:
        assert r is not None
        assert len(str(r[3])) < 5_000, str(r[3])[:200]
    assert [code(r) for r in replies] == [P.INVALID_PARAMS, P.INVALID_PARAMS, P.UNKNOWN_STATE, "ok",
                                          P.INVALID_PARAMS, P.INVALID_PARAMS]
