"""asyncio and asyncmachine: ``async def FooState`` handlers run as tasks, and end with their state.

Three download jobs, one machine each, fetch numbered lines from a small asyncio TCP server that this script
starts on 127.0.0.1 (a random port):

- ``job-1`` downloads 200 lines, then ``Processing`` hashes them in a worker thread (``asyncio.to_thread``);
- ``job-2`` asks for a slow, long stream; once it has 10 lines the script removes ``Downloading``: the state's
  context ends, so the machine cancels the handler's task (it sees ``CancelledError`` at its next ``await``),
  and the server notices the client hung up;
- ``job-3`` connects to a port nobody listens on: the async handler raises, and the machine turns the
  exception into the ``Exception`` state (``await mach.when_err()``).

The script waits with ``await mach.when(...)`` / ``when_args(...)`` under ``asyncio.wait_for`` timeouts.
Machines created inside a running loop run their async handlers on that loop.

Run: .venv/bin/python examples/asyncio_example.py
"""

from __future__ import annotations

import asyncio
import hashlib
import socket

from machine import Event, Machine, State, StateNames, Waiter


class S(StateNames):
    Start: str
    Downloading: str
    Progress: str
    Downloaded: str
    Processing: str
    Processed: str


SCHEMA = {
    S.Start: State(),
    S.Downloading: State(require=(S.Start,), remove=(S.Downloaded,)),
    S.Progress: State(multi=True, require=(S.Downloading,)),  # one activation per line received
    S.Downloaded: State(remove=(S.Downloading,)),
    S.Processing: State(auto=True, require=(S.Downloaded,), remove=(S.Processed,)),
    S.Processed: State(remove=(S.Processing,)),
}

TIMEOUT = 5.0  # every wait is bounded


# ------------------------------------------------------------------------------------------- the line server

class LineServer:
    """Answers ``<name> <count> <delay>\\n`` with ``count`` lines, one every ``delay`` seconds."""

    def __init__(self) -> None:
        self.hangups: dict[str, asyncio.Event] = {}
        self.sent: dict[str, int] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name, count, delay = (await reader.readline()).decode().split()
        self.sent[name] = 0
        hangup = self.hangups.setdefault(name, asyncio.Event())
        try:
            for i in range(int(count)):
                writer.write(f"{name} line {i + 1}\n".encode())
                await writer.drain()
                self.sent[name] = i + 1
                await asyncio.sleep(float(delay))
            writer.write_eof()
        except (ConnectionResetError, BrokenPipeError):
            hangup.set()  # the client went away mid-stream
        finally:
            writer.close()


# ------------------------------------------------------------------------------------------- the handlers

class Downloader:
    def __init__(self, port: int, count: int, delay: float) -> None:
        self.port, self.count, self.delay = port, count, delay
        self.lines: list[bytes] = []
        self.cancelled = asyncio.Event()
        self.digest = ""

    async def DownloadingState(self, e: Event) -> None:
        """Runs as a task; cancelled as soon as Downloading's activation ends (its state context)."""
        m = e.machine
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)  # may raise: -> Exception
        try:
            writer.write(f"{m.id} {self.count} {self.delay}\n".encode())
            while line := await reader.readline():
                self.lines.append(line)
                m.add(S.Progress, args={"line": len(self.lines)})
        except asyncio.CancelledError:
            print(f"  [{m.id}] download task cancelled after {len(self.lines)} lines "
                  f"(Downloading active: {m.is_active(S.Downloading)})")
            self.cancelled.set()
            raise  # let the cancellation finish the task
        finally:
            writer.close()
        # the last thing the task does: adding Downloaded ends Downloading, whose context cancels this task at its
        # next await (there is none left)
        m.add(S.Downloaded, args={"lines": len(self.lines)})

    async def ProcessingState(self, e: Event) -> None:
        m = e.machine
        data = b"".join(self.lines)
        # CPU work off the loop; if Processing ended meanwhile, this task is cancelled while it waits
        self.digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
        m.add(S.Processed, args={"sha256": self.digest})


# ------------------------------------------------------------------------------------------- the script

def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def within(w: Waiter, what: str) -> None:
    """``await`` a waiter with a timeout; a waiter is awaitable from any loop."""
    try:
        ok = await asyncio.wait_for(w, TIMEOUT)
    except TimeoutError:
        raise TimeoutError(f"timeout waiting for {what}") from None
    if not ok:
        raise RuntimeError(f"waiter for {what} ended without its condition")


async def amain() -> None:
    srv = LineServer()
    server = await asyncio.start_server(srv.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"line server on 127.0.0.1:{port}")

    # created inside the running loop: their async handlers run as tasks on it
    jobs = {
        "job-1": Downloader(port, count=200, delay=0.0),
        "job-2": Downloader(port, count=10_000, delay=0.01),
        "job-3": Downloader(free_port(), count=1, delay=0.0),
    }
    machs = {name: Machine(SCHEMA, id=name, handlers=h) for name, h in jobs.items()}
    try:
        for m in machs.values():
            m.add(S.Start)
            m.add(S.Downloading)  # returns at once: DownloadingState runs as a task

        async def complete(m: Machine) -> None:
            await within(m.when(S.Processed), f"{m.id} Processed")
            h = jobs[m.id]
            expect = hashlib.sha256(b"".join(f"{m.id} line {i + 1}\n".encode() for i in range(h.count))).hexdigest()
            print(f"  [{m.id}] {len(h.lines)} lines, sha256 {h.digest[:16]}... "
                  f"({'matches' if h.digest == expect else 'DIFFERS from'} the expected) {m}")
            assert h.digest == expect

        async def cancel_midway(m: Machine) -> None:
            await within(m.when_args(S.Progress, {"line": 10}), f"{m.id} line 10")
            print(f"  [{m.id}] has 10 lines, removing Downloading")
            m.remove(S.Downloading)
            await asyncio.wait_for(jobs[m.id].cancelled.wait(), TIMEOUT)
            await asyncio.wait_for(srv.hangups[m.id].wait(), TIMEOUT)
            print(f"  [{m.id}] server saw the client hang up after sending {srv.sent[m.id]} of "
                  f"{jobs[m.id].count} lines; {m}")

        async def fail(m: Machine) -> None:
            await within(m.when_err(), f"{m.id} Exception")
            print(f"  [{m.id}] Exception: {type(m.err).__name__}: {m.err}; {m}")

        await asyncio.gather(complete(machs["job-1"]), cancel_midway(machs["job-2"]), fail(machs["job-3"]))
        assert machs["job-2"].not_active(S.Downloading, S.Downloaded) and jobs["job-2"].cancelled.is_set()
        assert machs["job-3"].is_err() and isinstance(machs["job-3"].err, OSError)
    finally:
        for m in machs.values():
            m.dispose()  # ends every state context: any task still running is cancelled
        server.close()
        await server.wait_closed()
    print("done")


def main() -> None:
    asyncio.run(amain())


if __name__ == "__main__":
    main()
