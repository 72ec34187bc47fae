"""Connections of one arpc run: addresses (argv, ``-f FILE``, ``-d DIR`` + watch), one client per distinct
address, the machine listing (sorted by id, duplicates first-wins), ``.`` resolution, status counts, filters.

The session talks to connections through a small interface that ``transport.Client`` has and that
:class:`arpc.local.LocalConn` implements for in-process machines: ``machines()`` (list of dicts with ``id``,
``parent_id``, ``tags``, ``time``, ``states``), ``machine(id)``, ``connected``, ``on_status(fn)``, ``close()``.
"""

from __future__ import annotations

import os
import re
import threading
import time as _time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .errors import Failed, NotConnected, UnknownMachine, UnknownState, UsageError, is_transport_error
from .record import record as dataclass

Connector = Callable[[str, float], Any]
Notify = Callable[[str, bool], Any]

NEW, CONNECTING, CONNECTED, DISCONNECTED, FAILED = "new", "connecting", "connected", "disconnected", "failed"


def normalize_address(addr: str) -> str:
    """``host:port`` -> ``tcp://host:port``; URIs (``tcp://``, ``ipc://``, ``inproc://``, ...) as they are."""
    addr = "".join(addr.split())
    if not addr:
        raise Failed("empty address")
    if "://" not in addr:
        addr = "tcp://" + addr
    return addr


def read_addr_file(path: str) -> str:
    """The address in an addr file (one line; whitespace ignored)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise Failed(f"cannot read address file: {path}: {e.strerror or e}") from None
    text = "".join(text.split())
    if not text:
        raise Failed(f"empty address file: {path}")
    return normalize_address(text)


def scan_dir(directory: str) -> list[str]:
    """Every ``*.addr`` file in ``directory``, sorted by name."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        raise Failed(f"no such directory: {directory}") from None
    except NotADirectoryError:
        raise Failed(f"not a directory: {directory}") from None
    except OSError as e:
        raise Failed(f"cannot read directory: {directory}: {e.strerror or e}") from None
    return [os.path.join(directory, n) for n in sorted(names) if n.endswith(".addr")]


CALL_TIMEOUT = 3.0  # calls after the hello (a mutation may wait for slow handlers on the source)


def default_connector(address: str, timeout: float, *, server_key: str | None = None,
                      client_keys: str | None = None) -> Any:
    """``transport.connect`` (the hello must answer within ``timeout``); later calls get :data:`CALL_TIMEOUT`."""
    from transport import connect  # imported lazily: help and usage errors never pay for it

    client = connect(address, timeout=timeout, server_key=server_key, client_keys=client_keys)
    client.timeout = max(float(getattr(client, "timeout", 0.0)), CALL_TIMEOUT)
    return client


# ---------------------------------------------------------------------------------------------------- endpoints


class Endpoint:
    """One distinct address: its connection, the machines it listed, and the mirrors made so far."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.conn: Any = None
        self.state = NEW
        self.error = ""
        self.infos: list[dict[str, Any]] = []
        self.mirrors: dict[str, Any] = {}
        self.busy = False  # a connect attempt is running
        self.fails = 0
        self.next_try = 0.0
        self.fail_noticed = False
        self.ever_connected = False
        self.closed = False

    @property
    def connected(self) -> bool:
        if self.state != CONNECTED or self.conn is None:
            return False
        ok = getattr(self.conn, "connected", True)
        return bool(ok)

    def __repr__(self) -> str:
        return f"<Endpoint {self.address} {self.state} {[i['id'] for i in self.infos]}>"


class Entry:
    """A machine in the listing: its endpoint, the last listing info and, once made, its mirror."""

    __slots__ = ("id", "endpoint", "info")

    def __init__(self, endpoint: Endpoint, info: dict[str, Any]) -> None:
        self.id: str = info["id"]
        self.endpoint = endpoint
        self.info = info

    @property
    def mirror(self) -> Any:
        return self.endpoint.mirrors.get(self.id)

    @property
    def names(self) -> list[str]:
        m = self.mirror
        return list(m.state_names) if m is not None else list(self.info.get("states") or [])

    def time(self) -> list[int]:
        m = self.mirror
        return list(m.time()) if m is not None else list(self.info.get("time") or [])

    def clock(self) -> dict[str, int]:
        return dict(zip(self.names, self.time(), strict=False))

    @property
    def parent_id(self) -> str | None:
        m = self.mirror
        return m.parent_id if m is not None else self.info.get("parent_id")

    @property
    def tags(self) -> list[str]:
        m = self.mirror
        return list(m.tags if m is not None else self.info.get("tags") or [])

    @property
    def connected(self) -> bool:
        if not self.endpoint.connected:
            return False
        m = self.mirror
        if m is None:
            return True
        if getattr(m, "disposed", False):
            return False
        return bool(getattr(m, "connected", True))

    def active(self) -> list[str]:
        return [n for n, t in zip(self.names, self.time(), strict=False) if t & 1]

    def is_active(self, state: str) -> bool:
        c = self.clock()
        return state in c and bool(c[state] & 1)

    def unknown(self, states: Iterable[str]) -> list[str]:
        names = set(self.names)
        return [s for s in states if s not in names]

    def check_states(self, states: Iterable[str]) -> None:
        bad = self.unknown(states)
        if bad:
            raise UnknownState(bad, self.id)

    def flags(self) -> str:
        """``C``/``D`` (connected or not), then ``R`` when its ``Ready`` is active, else ``S`` for ``Start``."""
        flag = "C" if self.connected else "D"
        c = self.clock()
        if c.get("Ready", 0) & 1:
            flag += "R"
        elif c.get("Start", 0) & 1:
            flag += "S"
        return flag

    def __repr__(self) -> str:
        return f"<Entry {self.id} @ {self.endpoint.address}>"


@dataclass
class Status:
    connected: int = 0
    connecting: int = 0
    disconnected: int = 0
    total: int = 0


# ---------------------------------------------------------------------------------------------------- filters


@dataclass
class Filters:
    """Listing filters of ``list``, ``group-*`` and ``watch`` (spec 3.3; ``-m`` is honoured)."""

    active: tuple[str, ...] = ()
    inactive: tuple[str, ...] = ()
    mtime_states: tuple[str, ...] = ()
    mtime_min: int | None = None
    mtime_max: int | None = None
    parent: str | None = None
    id_regexp: str | None = None
    id_partial: str | None = None
    id_prefix: str | None = None
    id_suffix: str | None = None
    limit: int | None = None
    skip: int = 0  # -f/--from: skip the first N machines of the listing
    disconn: bool = True

    def apply(self, entries: Sequence[Entry]) -> list[Entry]:
        rx = None
        if self.id_regexp is not None:
            try:
                rx = re.compile(self.id_regexp)
            except re.error as err:
                raise UsageError(f"invalid regexp: {self.id_regexp}: {err}") from None
        out: list[Entry] = []
        for e in entries[self.skip:]:
            if rx is not None and not rx.search(e.id):
                continue
            if self.id_partial is not None and self.id_partial not in e.id:
                continue
            if self.id_prefix is not None and not e.id.startswith(self.id_prefix):
                continue
            if self.id_suffix is not None and not e.id.endswith(self.id_suffix):
                continue
            if self.parent is not None and e.parent_id != self.parent:
                continue
            if not self.disconn and not e.connected:
                continue
            if self.active or self.inactive or self.mtime_min is not None or self.mtime_max is not None:
                clock = e.clock()
                if any(not clock.get(s, 0) & 1 for s in self.active):
                    continue
                if any(s not in clock or clock[s] & 1 for s in self.inactive):
                    continue
                if self.mtime_min is not None or self.mtime_max is not None:
                    states = self.mtime_states or tuple(clock)
                    mtime = sum(clock.get(s, 0) for s in states)
                    if self.mtime_min is not None and mtime < self.mtime_min:
                        continue
                    if self.mtime_max is not None and mtime > self.mtime_max:
                        continue
            out.append(e)
            if self.limit and len(out) >= self.limit:
                break
        return out


# ---------------------------------------------------------------------------------------------------- session


class Session:
    """The connections of one arpc run (CLI or REPL)."""

    def remember_args(self, names: list[str]) -> None:
        """Offer ``names`` first when completing ``--arg`` (at most 200 are kept)."""
        for n in reversed(names):
            if n in self.arg_names:
                self.arg_names.remove(n)
            self.arg_names.insert(0, n)
        del self.arg_names[200:]

    def __init__(self, *, connector: Connector | None = None, connect_timeout: float = 1.0, eager: bool = False,
                 notify: Notify | None = None) -> None:
        self.connector: Connector = connector or default_connector
        self.connect_timeout = connect_timeout
        self.eager = eager  # make every machine's mirror at once (REPL: live listing, completion, watch)
        self.notify: Notify | None = notify
        self.opened = False
        self.opener: Callable[[], Any] | None = None  # what ensure_open() runs (the CLI's connect + checks)
        self.arg_names: list[str] = []  # --arg names used before, most recent first (for completion)
        self._lock = threading.RLock()
        self._args: list[str] = []  # addresses from argv / connect, in order
        self._directory: str | None = None
        self._file: str | None = None
        self._file_addrs: dict[str, str] = {}  # addr file -> address (kept when the file goes away)
        self._endpoints: dict[str, Endpoint] = {}  # in address order
        self._quiet = True  # no notices until the first open() finished
        self._noticed: dict[str, bool] = {}
        self._stop = threading.Event()
        self._bg: threading.Thread | None = None
        self._watch = False
        self.on_change: Callable[[], Any] | None = None  # called after connection changes (REPL redraw)

    # ------------------------------------------------------------------ addresses

    def load(self, addresses: Iterable[str] = (), *, file: str | None = None, directory: str | None = None) -> None:
        """Register the addresses of argv, ``-f FILE`` and ``-d DIR`` (errors: :class:`Failed`)."""
        for a in addresses:
            self._args.append(normalize_address(a))
        if file is not None:
            self._file = file
            self._file_addrs[file] = read_addr_file(file)
        if directory is not None:
            self._directory = directory
            paths = scan_dir(directory)
            if not paths:
                raise Failed(f"no .addr files found in {directory}")
            for p in paths:
                self._file_addrs[p] = read_addr_file(p)
        self._rebuild()

    def add_address(self, address: str) -> Endpoint:
        addr = normalize_address(address)
        with self._lock:
            if addr not in self._args:
                self._args.append(addr)
            self._rebuild()
            return self._endpoints[addr]

    def add_local(self, machines: Iterable[Any], address: str = "local://") -> Endpoint:
        """Serve in-process machines (``machine.Machine``) as one connected endpoint."""
        from .local import LocalConn

        conn = LocalConn(machines, address)
        with self._lock:
            ep = self._endpoints.get(address) or Endpoint(address)
            if address not in self._args:
                self._args.append(address)
            self._endpoints[address] = ep
            self._rebuild()
        self._install(ep, conn)
        return ep

    @property
    def addresses(self) -> list[str]:
        with self._lock:
            return list(self._endpoints)

    def endpoints(self) -> list[Endpoint]:
        with self._lock:
            return list(self._endpoints.values())

    def _sources(self) -> list[str]:
        out = list(self._args)
        out.extend(self._file_addrs[p] for p in sorted(self._file_addrs))
        return out

    def _rebuild(self, replaced: dict[str, str] | None = None) -> list[Endpoint]:
        """Re-derive the endpoint order from the sources; returns the new endpoints (to connect)."""
        dropped: list[Endpoint] = []
        new: list[Endpoint] = []
        with self._lock:
            order: dict[str, Endpoint] = {}
            for addr in self._sources():
                if addr in order:
                    continue
                ep = self._endpoints.get(addr)
                if ep is None:
                    ep = Endpoint(addr)
                    new.append(ep)
                order[addr] = ep
            for addr, ep in self._endpoints.items():
                if addr not in order:
                    dropped.append(ep)
            # a file now pointing elsewhere: the new endpoint shows the old one's machines until it connects
            for old_addr, new_addr in (replaced or {}).items():
                old, ep2 = self._endpoints.get(old_addr), order.get(new_addr)
                if old is not None and ep2 is not None and ep2.state == NEW and not ep2.infos:
                    ep2.infos = [dict(i) for i in old.infos]
            self._endpoints = order
        for ep in dropped:
            self._close_endpoint(ep)
        return new

    # ------------------------------------------------------------------ connecting

    def open(self, timeout: float | None = None) -> Status:
        """Connect every endpoint not connected yet, in parallel; returns the status after at most ``timeout``."""
        eps = [ep for ep in self.endpoints() if ep.state in (NEW, FAILED) and not ep.busy]
        self._connect_many(eps, self.connect_timeout if timeout is None else timeout)
        self.opened = True
        self._quiet = False
        return self.status()

    def ensure_open(self) -> None:
        """Connect on first use (so ``help`` or a usage error never connects)."""
        if self.opened:
            return
        if self.opener is not None:
            self.opener()
            self.opened = True
        else:
            self.open()

    def _connect_many(self, eps: list[Endpoint], timeout: float) -> None:
        if not eps:
            return
        if len(eps) == 1:
            self._connect(eps[0], timeout)
            return
        threads = [threading.Thread(target=self._connect, args=(ep, timeout), daemon=True, name="arpc-connect")
                   for ep in eps]
        for t in threads:
            t.start()
        deadline = _time.monotonic() + timeout + 1.0
        for t in threads:
            t.join(max(0.0, deadline - _time.monotonic()))

    def _connect(self, ep: Endpoint, timeout: float) -> bool:
        with self._lock:
            if ep.busy or ep.closed:
                return False
            ep.busy = True
            if ep.state != CONNECTED:
                ep.state = CONNECTING
        conn = None
        try:
            conn = self.connector(ep.address, timeout)
            infos = list(conn.machines())
        except Exception as e:  # noqa: BLE001 - any failure is "cannot connect"
            if conn is not None:
                _close_quietly(conn)
            with self._lock:
                ep.busy = False
                ep.state = FAILED
                ep.error = str(e) or type(e).__name__
                ep.fails += 1
                ep.next_try = _time.monotonic() + min(5.0, 0.5 * 2 ** min(ep.fails, 4))
                notice = ep.ever_connected and not ep.fail_noticed and not self._quiet
                ep.fail_noticed = True
            if notice:
                self._notice(f"reconnect to {ep.address} failed", True)
            return False
        if ep.closed:
            _close_quietly(conn)
            return False
        self._install(ep, conn, infos)
        return True

    def _install(self, ep: Endpoint, conn: Any, infos: list[dict[str, Any]] | None = None) -> None:
        if infos is None:
            infos = list(conn.machines())
        local = hasattr(conn, "set_connected")
        with self._lock:
            old = ep.conn
            ep.conn = conn
            ep.infos = infos
            ep.mirrors = {}
            ep.state = CONNECTED
            ep.error = ""
            ep.busy = False
            ep.fails = 0
            ep.fail_noticed = False
            ep.ever_connected = True
        if old is not None and old is not conn:
            _close_quietly(old)
        on_status = getattr(conn, "on_status", None)
        if on_status is not None:
            on_status(lambda ok, ep=ep, conn=conn: self._on_status(ep, conn, ok))
        if self.eager or local:
            for info in infos:
                try:
                    self.mirror_of(ep, info["id"])
                except Exception:  # noqa: BLE001 - shown as not connected later
                    pass
        for info in infos:
            self._mach_notice(info["id"], True)
        self._changed()

    def _on_status(self, ep: Endpoint, conn: Any, ok: bool) -> None:
        with self._lock:
            if ep.conn is not conn or ep.closed:
                return
            ep.state = CONNECTED if ok else DISCONNECTED
            ids = [i["id"] for i in ep.infos]
        for mid in ids:
            self._mach_notice(mid, ok)
        if ok:  # the daemon may have come back with other machines
            threading.Thread(target=self._refresh, args=(ep, conn), daemon=True, name="arpc-refresh").start()
        self._changed()

    def _refresh(self, ep: Endpoint, conn: Any) -> None:
        try:
            infos = list(conn.machines())
        except Exception:  # noqa: BLE001
            return
        with self._lock:
            if ep.conn is not conn:
                return
            ep.infos = infos
        if self.eager:
            for info in infos:
                try:
                    self.mirror_of(ep, info["id"])
                except Exception:  # noqa: BLE001
                    pass
        for info in infos:
            self._mach_notice(info["id"], True)
        self._changed()

    def mirror_of(self, ep: Endpoint, mach_id: str) -> Any:
        with self._lock:
            m = ep.mirrors.get(mach_id)
            conn = ep.conn
        if m is not None:
            return m
        if conn is None:
            raise NotConnected(f"machine {mach_id} not connected")
        try:
            m = conn.machine(mach_id)
        except Exception as e:
            if is_transport_error(e) or isinstance(e, (OSError, LookupError)):
                raise NotConnected(f"machine {mach_id} not connected") from e
            raise
        with self._lock:
            if ep.conn is not conn:  # replaced meanwhile; closing the old client disposes the mirror
                raise NotConnected(f"machine {mach_id} not connected")
            return ep.mirrors.setdefault(mach_id, m)

    def reconnect(self) -> Status:
        """Try every endpoint that is not connected now (``connect`` without an address)."""
        eps = [ep for ep in self.endpoints() if ep.state in (NEW, FAILED) and not ep.busy]
        self._connect_many(eps, self.connect_timeout)
        return self.status()

    # ------------------------------------------------------------------ listing

    def entries(self) -> list[Entry]:
        """Every machine, sorted by id; an id behind several addresses is listed once (first address wins)."""
        with self._lock:
            seen: dict[str, Entry] = {}
            for ep in self._endpoints.values():
                for info in ep.infos:
                    mid = info.get("id")
                    if isinstance(mid, str) and mid not in seen:
                        seen[mid] = Entry(ep, info)
        return [seen[k] for k in sorted(seen)]

    def first(self) -> Entry:
        """``.``: the first connected machine of the listing (else the first one)."""
        entries = self.entries()
        for e in entries:
            if e.connected:
                return e
        if entries:
            return entries[0]
        raise NotConnected()

    def resolve(self, ref: str) -> Entry:
        self.ensure_open()
        if ref == ".":
            return self.first()
        for e in self.entries():
            if e.id == ref:
                return e
        raise UnknownMachine(ref)

    def mirror(self, entry: Entry) -> Any:
        """The entry's machine (a mirror for remote ones), made on first use; last-known when disconnected."""
        m = entry.mirror
        if m is not None:
            return m
        if not entry.connected:
            raise NotConnected(f"machine {entry.id} not connected")
        return self.mirror_of(entry.endpoint, entry.id)

    def live(self, entry: Entry) -> Any:
        """The entry's machine for mutations and new waits: :class:`NotConnected` when it is down."""
        if not entry.connected:
            raise NotConnected(f"machine {entry.id} not connected")
        m = self.mirror(entry)
        if not entry.connected:
            raise NotConnected(f"machine {entry.id} not connected")
        return m

    def status(self) -> Status:
        st = Status()
        with self._lock:
            eps = list(self._endpoints.values())
        listed = {e.endpoint for e in self.entries()}
        for e in self.entries():
            self._count(st, e.connected, e.endpoint.state)
        for ep in eps:
            if ep not in listed and not ep.infos:
                self._count(st, False, ep.state)
        return st

    @staticmethod
    def _count(st: Status, connected: bool, state: str) -> None:
        st.total += 1
        if connected:
            st.connected += 1
        elif state in (NEW, CONNECTING):
            st.connecting += 1
        else:
            st.disconnected += 1

    def state_union(self) -> list[str]:
        """Every state name of every machine (for completion of filters)."""
        out: dict[str, None] = {}
        for e in self.entries():
            for n in e.names:
                out.setdefault(n)
        return list(out)

    # ------------------------------------------------------------------ background: retries and addr files

    def start_background(self, watch: bool = True, interval: float = 0.5) -> None:
        """Retry failed endpoints and (``watch``) poll the addr files for new or changed addresses."""
        self._watch = watch and (self._directory is not None or self._file is not None)
        if self._bg is not None:
            return
        self._bg = threading.Thread(target=self._bg_loop, args=(interval,), daemon=True, name="arpc-bg")
        self._bg.start()

    def _bg_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the background must not die
                pass

    def tick(self) -> None:
        """One background round: poll addr files, start due retries."""
        if self._watch:
            self.poll_files()
        now = _time.monotonic()
        for ep in self.endpoints():
            if ep.state == FAILED and not ep.busy and now >= ep.next_try:
                threading.Thread(target=self._connect, args=(ep, self.connect_timeout), daemon=True,
                                 name="arpc-retry").start()

    def poll_files(self) -> list[Endpoint]:
        """Re-read the watched addr files; connects new addresses at once. Removed files are ignored."""
        paths: list[str] = []
        if self._directory is not None:
            try:
                paths = scan_dir(self._directory)
            except Failed:
                paths = []
        if self._file is not None and os.path.exists(self._file):
            paths.append(self._file)
        replaced: dict[str, str] = {}
        changed = False
        for p in paths:
            try:
                addr = read_addr_file(p)
            except Failed:
                continue
            with self._lock:
                old = self._file_addrs.get(p)
                if old == addr:
                    continue
                self._file_addrs[p] = addr
            changed = True
            if old is not None:
                replaced[old] = addr
        if not changed:
            return []
        new = self._rebuild(replaced)
        for ep in new:
            threading.Thread(target=self._connect, args=(ep, self.connect_timeout), daemon=True,
                             name="arpc-connect").start()
        self._changed()
        return new

    # ------------------------------------------------------------------ notices, closing

    def _mach_notice(self, mach_id: str, ok: bool) -> None:
        with self._lock:
            if self._noticed.get(mach_id) == ok:
                return
            self._noticed[mach_id] = ok
            quiet = self._quiet
        if not quiet:
            self._notice(f"connected to {mach_id}" if ok else f"disconnected from {mach_id}, reconnecting", not ok)

    def _notice(self, msg: str, error: bool = False) -> None:
        if self.notify is not None:
            try:
                self.notify(msg, error)
            except Exception:  # noqa: BLE001
                pass

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # noqa: BLE001
                pass

    def _close_endpoint(self, ep: Endpoint) -> None:
        # Mirrors are not closed one by one: closing the client disposes them. (A mirror's own close() disposes
        # it through Machine.dispose, which removes Start, and a connected mirror sends that to the source.)
        with self._lock:
            ep.closed = True
            conn = ep.conn
            ep.mirrors = {}
            ep.conn = None
        if conn is not None:
            _close_quietly(conn)

    def close(self) -> None:
        self._stop.set()
        for ep in self.endpoints():
            self._close_endpoint(ep)
        bg = self._bg
        if bg is not None and bg is not threading.current_thread():
            bg.join(2.0)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_quietly(obj: Any) -> None:
    close = getattr(obj, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:  # noqa: BLE001
        pass
