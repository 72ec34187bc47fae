"""The one address parser (transport/addr.py), as servers, clients and the shell use it: each malformed address
names the rule it breaks."""

from __future__ import annotations

import pytest

from transport.addr import AddressError, normalize, parse


@pytest.mark.parametrize(("text", "want"), [
    ("127.0.0.1:7101", "tcp://127.0.0.1:7101"),
    (" tcp://host:1\n", "tcp://host:1"),
    ("[::1]:7101", "tcp://[::1]:7101"),
    ("ipc:///tmp/x.sock", "ipc:///tmp/x.sock"),
    ("inproc://name", "inproc://name"),
])
def test_valid(text: str, want: str) -> None:
    assert parse(text) == want


@pytest.mark.parametrize(("text", "rule"), [
    ("foo", "no port"),
    ("127.0.0.1", "no port"),
    ("127.0.0.1:99999", "port '99999' is not a port from 1 to 65535"),
    ("127.0.0.1:0", "port '0' is not a port from 1 to 65535"),
    ("127.0.0.1:*", "port '*' is not"),
    ("http://127.0.0.1:80", "unsupported scheme 'http'"),
    (":7101", "no host"),
    ("ipc://", "nothing after ipc://"),
    ("a b:1", "contains whitespace"),
    ("", "empty"),
])
def test_malformed_names_the_rule(text: str, rule: str) -> None:
    with pytest.raises(AddressError, match="invalid address") as e:
        parse(text)
    assert rule in str(e.value)


def test_binding_takes_any_port_and_extra_schemes_pass() -> None:
    assert normalize("127.0.0.1:0") == normalize("tcp://127.0.0.1:*") == "tcp://127.0.0.1:*"
    assert parse("local://a", schemes=("local",)) == "local://a"
    with pytest.raises(AddressError, match="unsupported scheme 'local'"):
        parse("local://a")
