"""Client and server agree on liveness: a client whose session the server no longer holds finds out on its next
exchange and subscribes again."""

from __future__ import annotations

import socket
import threading

from tr_util import RawPeer, until

from machine import Machine, State
from transport import connect, expose

SCHEMA = {"Foo": State(), "Multi": State(multi=True)}


class Proxy:
    """A TCP forwarder whose client-to-server direction can be held (the bytes wait in the kernel), while the
    server's pushes keep flowing to the client."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.up = threading.Event()  # the client -> server direction flows
        self.up.set()
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(self.target, timeout=5)
            except OSError:
                c.close()
                continue
            threading.Thread(target=self._pump, args=(c, s, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(s, c, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, held: bool) -> None:
        try:
            while True:
                if held:
                    while not self.up.wait(0.1):
                        if self.closed:
                            return
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def close(self) -> None:
        self.closed = True
        self.up.set()
        self.lsock.close()


def test_a_client_whose_session_expired_subscribes_again() -> None:
    """The server expired a client's session (its requests did not arrive for PEER_TIMEOUT: a paused daemon, a
    one-way network stall) while pushes kept reaching the client, so its link looked alive; its next pings were
    answered as usual by a new, empty session: the mirror never got a push again (connected stayed True)."""
    m = Machine(SCHEMA, id="m")
    ep = expose(m)
    proxy = Proxy(("127.0.0.1", int(ep.address.rsplit(":", 1)[1])))
    stop = threading.Event()

    def source() -> None:
        while not stop.wait(0.05):
            m.add("Multi")

    t = threading.Thread(target=source)
    try:
        with connect(f"127.0.0.1:{proxy.port}") as c:
            rm = c.machine("m")
            downs: list[bool] = []
            c.on_status(downs.append)
            t.start()
            assert until(lambda: rm.tick("Multi") >= 10)  # pushes flow
            proxy.up.clear()  # the client's pings stop reaching the server; pushes still reach the client
            try:
                assert until(lambda: ep.sessions == 0, timeout=10)  # expired (or dropped when ZeroMQ gave up)
            finally:
                proxy.up.set()
            assert until(lambda: ep.sessions == 1, timeout=5)  # the client is back, with a new session
            # it finds out: its mirror follows the source again
            assert until(lambda: m.tick("Multi") - rm.tick("Multi") <= 4, timeout=5), \
                f"mirror {rm.tick('Multi')} vs source {m.tick('Multi')}, status changes {downs}"
            assert c.connected
    finally:
        stop.set()
        if t.is_alive():
            t.join(5)
        proxy.close()
        ep.stop()


def test_ping_from_a_session_that_never_said_hello_asks_for_one() -> None:
    m = Machine(SCHEMA, id="m")
    ep = expose(m)
    peer = RawPeer(ep.address)
    try:
        assert peer.request("ping", 1, None, {})[3] == {"boot": "", "hello": True}
        assert peer.request("hello", 2, None, {"id": "x", "proto": 1})[0] == "ok"
        assert peer.request("ping", 3, None, {})[3]["boot"] == ep.boot
    finally:
        peer.close()
        ep.stop()


