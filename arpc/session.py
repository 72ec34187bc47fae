"""Connections of one arpc run: addresses (argv, ``-f FILE``, ``-d DIR`` + watch), one :class:`arpc.link.Link` per
distinct address, the machine listing (sorted by id, duplicates first-wins), ``.`` resolution, status counts.

The session talks to connections through a small interface that ``transport.Client`` has and that
:class:`arpc.local.LocalConn` implements for in-process machines: ``machines()`` (list of dicts with ``id``,
``parent_id``, ``tags``, ``time``, ``states``), ``machine(id)``, ``connected``, ``on_status(fn)``, ``close()``.
"""

from __future__ import annotations

import os
import threading
import time as _time
from collections.abc import Callable, Iterable
from typing import Any

from .addrs import LOCAL_SCHEMES, parse_address, read_addr_dir, read_addr_file, scan_dir
from .errors import Failed, NotConnected, UnknownMachine, is_transport_error
from .link import CONNECTED, CONNECTING, DISCONNECTED, FAILED, NEW, Entry, Link
from .listing import Status, bulk, file_infos, make_entries, share_names

Connector = Callable[[str, float], Any]
Notify = Callable[[str, bool], Any]
__all__ = ["LOCAL_SCHEMES", "Session", "Status", "parse_address", "read_addr_dir", "read_addr_file", "scan_dir"]

NOTICE_NAMES = 5  # a connect / disconnect notice names up to this many machines, else counts them
CALL_TIMEOUT = 3.0  # calls after the hello (a mutation may wait for slow handlers on the source)


def default_connector(address: str, timeout: float, *, server_key: str | None = None,
                      client_keys: str | None = None, listing: bool = True) -> Any:
    """``transport.connect`` (the hello must answer within ``timeout``); later calls get :data:`CALL_TIMEOUT`.
    ``listing``: the machines listed with the hello (``client.listing``)."""
    from transport import connect  # imported lazily: help and usage errors never pay for it

    # the listing asked with the hello: one round trip (a fleet: one wake-up of each daemon, not two)
    client = connect(address, timeout=timeout, server_key=server_key, client_keys=client_keys, listing=listing)
    client.timeout = max(float(getattr(client, "timeout", 0.0)), CALL_TIMEOUT)
    return client


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
        self.curve = False  # the connector speaks CURVE (said in connection errors)
        self.keys: dict[str, tuple[str | None, str | None]] = {}  # address -> its own (server, client) key files
        self.opener: Callable[[], Any] | None = None  # what ensure_open() runs (the CLI's connect + checks)
        self.arg_names: list[str] = []  # --arg names used before, most recent first (for completion)
        self._lock = threading.RLock()
        self._dot: str | None = None  # the machine `.` names, fixed at its first use
        self._args: list[str] = []  # addresses from argv / connect, in order
        self._directory: str | None = None
        self._file: str | None = None
        self._file_addrs: dict[str, str] = {}  # addr file -> address (kept when the file goes away)
        self._unlisted: dict[str, list[dict[str, Any]]] | None = None  # see unlisted()
        self._links: dict[str, Link] = {}  # in address order
        # entries() made last, of which listings, and how many of them each link has
        self._entries: tuple[Any, list[Entry], dict[Link, int]] = ((), [], {})
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
            self._args.append(parse_address(a))
        if file is not None:
            self._file = file
            self._file_addrs[file] = read_addr_file(file)
        if directory is not None:
            self._directory = directory
            found = read_addr_dir(directory)
            if not found:
                raise Failed(f"no .addr files found in {directory}")
            self._file_addrs.update(found)
        self._rebuild()

    def add_address(self, address: str) -> Link:
        addr = parse_address(address)
        with self._lock:
            if addr not in self._args:
                self._args.append(addr)
            self._rebuild()
            return self._links[addr]

    def remove_address(self, address: str) -> None:
        """Forget an address given by argv or ``connect`` (its link is closed; addr files are not touched)."""
        addr = parse_address(address)
        with self._lock:
            if addr in self._args:
                self._args.remove(addr)
        self._rebuild()

    def add_local(self, machines: Iterable[Any], address: str = "local://") -> Link:
        """Serve in-process machines (``machine.Machine``) as one connected link."""
        from .local import LocalConn

        conn = LocalConn(machines, address)
        with self._lock:
            link = self._links.get(address) or Link(address)
            if address not in self._args:
                self._args.append(address)
            self._links[address] = link
            self._rebuild()
        self._install(link, conn)
        return link

    @property
    def addresses(self) -> list[str]:
        with self._lock:
            return list(self._links)

    def links(self) -> list[Link]:
        with self._lock:
            return list(self._links.values())

    def failures(self, detail: bool = False) -> list[str]:
        """One ``cannot connect to ADDR: why`` line per address whose last connect failed."""
        return [link.failure(detail) for link in self.links() if link.state == FAILED]

    def _sources(self) -> list[str]:
        """argv's addresses, then those of the addr files, each at the place of its first file by name (one
        pass over the files, a sort of the distinct addresses: a fleet's dir holds 50,000 files, 50 addresses)."""
        first: dict[str, str] = {}
        for p, addr in self._file_addrs.items():
            f = first.get(addr)
            if f is None or p < f:
                first[addr] = p
        return [*self._args, *sorted(first, key=first.__getitem__)]

    def _rebuild(self, replaced: dict[str, str] | None = None) -> list[Link]:
        """Re-derive the link order from the sources; returns the new links (to connect)."""
        dropped: list[Link] = []
        new: list[Link] = []
        with self._lock:
            order: dict[str, Link] = {}
            for addr in self._sources():
                if addr in order:
                    continue
                link = self._links.get(addr)
                if link is None:
                    link = Link(addr)
                    new.append(link)
                order[addr] = link
            for addr, link in self._links.items():
                if addr not in order:
                    dropped.append(link)
            # a file now pointing elsewhere: the new link shows the old one's machines until it connects
            for old_addr, new_addr in (replaced or {}).items():
                old, link2 = self._links.get(old_addr), order.get(new_addr)
                if old is not None and link2 is not None and link2.state == NEW and not link2.infos:
                    link2.infos = [dict(i) for i in old.infos]
            self._links = order
        for link in dropped:
            self._close_link(link)
        return new

    def unlisted(self) -> bool:
        """Connect without listings (a one-shot ``group-*`` needs only ids), if not yet connected and every address
        is from ``-d DIR``: a link's machines are then its addr files' ids (``<id>.addr``), no state names."""
        if (self.opened or self._args or self._file is not None or self._directory is None or self.keys
                or self.connector is not default_connector):
            return False
        self._unlisted = file_infos(self._file_addrs)
        return True

    # ------------------------------------------------------------------ connecting

    def open(self, timeout: float | None = None) -> Status:
        """Connect every link not connected yet, in parallel; returns the status after at most ``timeout``."""
        links = [link for link in self.links() if link.state in (NEW, FAILED) and not link.busy]
        self._connect_many(links, self.connect_timeout if timeout is None else timeout)
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

    def _connect_many(self, links: list[Link], timeout: float) -> None:
        if not links:
            return
        if len(links) == 1:
            self._connect(links[0], timeout)
            return
        threads = [threading.Thread(target=self._connect, args=(link, timeout), daemon=True, name="arpc-connect")
                   for link in links]
        with bulk(not self.eager):  # a fleet's listings: 50,000 machines' dicts
            for t in threads:
                t.start()
            deadline = _time.monotonic() + timeout + 1.0
            for t in threads:
                t.join(max(0.0, deadline - _time.monotonic()))

    def _connect(self, link: Link, timeout: float) -> bool:
        with self._lock:
            if link.busy or link.closed:
                return False
            link.busy = True
            if link.state != CONNECTED:
                link.state = CONNECTING
        conn = None
        keys = self.keys.get(link.address)  # a named connection's key files (`connect @prod`)
        try:
            unlisted = self._unlisted.get(link.address) if self._unlisted is not None else None
            if unlisted is not None:
                conn = default_connector(link.address, timeout, listing=False)
                infos = unlisted
            else:
                if keys is None:
                    conn = self.connector(link.address, timeout)
                else:
                    conn = default_connector(link.address, timeout, server_key=keys[0], client_keys=keys[1])
                listed = getattr(conn, "listing", None)  # asked with the hello (default_connector)
                infos = list(conn.machines() if listed is None else listed)
                if listed is not None:
                    conn.listing = None  # (a later refresh asks again)
        except Exception as e:  # noqa: BLE001 - any failure is "cannot connect"
            if conn is not None:
                _close_quietly(conn)
            from .diagnose import explain

            reason = explain(link.address, e, timeout, curve=self.curve or keys is not None)
            with self._lock:
                link.busy = False
                link.state = FAILED
                link.error = reason
                link.detail = str(e) or type(e).__name__
                link.fails += 1
                link.next_try = _time.monotonic() + min(5.0, 0.5 * 2 ** min(link.fails, 4))
                notice = link.ever_connected and not link.fail_noticed and not self._quiet
                link.fail_noticed = True
            if notice:
                self._notice(f"reconnect to {link.address} failed", True)
            return False
        if link.closed:
            _close_quietly(conn)
            return False
        self._install(link, conn, infos)
        return True

    def _install(self, link: Link, conn: Any, infos: list[dict[str, Any]] | None = None) -> None:
        if infos is None:
            infos = list(conn.machines())
        share_names(infos)
        local = hasattr(conn, "set_connected")
        with self._lock:
            old = link.conn
            link.conn = conn
            link.infos = infos
            link.mirrors = {}
            link.state = CONNECTED
            link.error = link.detail = ""
            link.busy = False
            link.fails = 0
            link.fail_noticed = False
            link.ever_connected = True
        if old is not None and old is not conn:
            _close_quietly(old)
        on_status = getattr(conn, "on_status", None)
        if on_status is not None:
            on_status(lambda ok, link=link, conn=conn: self._on_status(link, conn, ok))
        if self.eager or local:
            for info in infos:
                try:
                    self.mirror_of(link, info["id"])
                except Exception:  # noqa: BLE001 - shown as not connected later
                    pass
        self._mach_notice(link, [info["id"] for info in infos], True)
        self._changed()

    def _on_status(self, link: Link, conn: Any, ok: bool) -> None:
        with self._lock:
            if link.conn is not conn or link.closed:
                return
            link.state = CONNECTED if ok else DISCONNECTED
            ids = [i["id"] for i in link.infos]
        self._mach_notice(link, ids, ok)
        if ok:  # the daemon may have come back with other machines
            threading.Thread(target=self._refresh, args=(link, conn), daemon=True, name="arpc-refresh").start()
        self._changed()

    def _refresh(self, link: Link, conn: Any) -> None:
        try:
            infos = list(conn.machines())
        except Exception:  # noqa: BLE001
            return
        share_names(infos)
        with self._lock:
            if link.conn is not conn:
                return
            link.infos = infos
        if self.eager:
            for info in infos:
                try:
                    self.mirror_of(link, info["id"])
                except Exception:  # noqa: BLE001
                    pass
        self._mach_notice(link, [info["id"] for info in infos], True)
        self._changed()

    def mirror_of(self, link: Link, mach_id: str) -> Any:
        with self._lock:
            m = link.mirrors.get(mach_id)
            conn = link.conn
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
            if link.conn is not conn:  # replaced meanwhile; closing the old client disposes the mirror
                raise NotConnected(f"machine {mach_id} not connected")
            return link.mirrors.setdefault(mach_id, m)

    def reconnect(self) -> Status:
        """Try every link that is not connected now (``connect`` without an address)."""
        links = [link for link in self.links() if link.state in (NEW, FAILED) and not link.busy]
        self._connect_many(links, self.connect_timeout)
        return self.status()

    # ------------------------------------------------------------------ listing

    def entries(self) -> list[Entry]:
        """Every machine, sorted by id; an id behind several addresses is listed once (first address wins)."""
        with self._lock:
            # made again only when a link or its listing changed (listings are replaced, never edited in place):
            # a command asks several times, and a fleet lists 50,000 machines
            key = tuple((link, link.infos) for link in self._links.values())
            if self._entries[0] == key:  # the same lists: equal at once, by identity
                return list(self._entries[1])
            with bulk(not self.eager):
                self._entries = (key, *make_entries(self._links.values()))
            return list(self._entries[1])

    def dot(self) -> Entry:
        """``.``: the first machine of the listing when ``.`` was first used, the same one for the rest of the
        session (a new addr file does not move it); while it is disconnected, ``.`` is reported stale."""
        with self._lock:
            pinned = self._dot
        if pinned is None:
            e = self.first()
            with self._lock:
                if self._dot is None:
                    self._dot = e.id
                pinned = self._dot
        for e in self.entries():
            if e.id == pinned:
                if not e.connected:
                    raise NotConnected(f"`.` is {pinned}, which is disconnected (stale until it is back)")
                return e
        raise NotConnected(f"`.` is {pinned}, which is no longer listed (stale)")

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
            return self.dot()
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
        return self.mirror_of(entry.link, entry.id)

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
            links = list(self._links.values())
        if self._unlisted is not None:  # the addr files' ids: each behind one link, no mirrors, no entries to make
            entries: list[Entry] = []
            counts = {link: len(link.infos) for link in links if link.infos}
        else:
            self.entries()
            with self._lock:
                _, entries, counts = self._entries
        # counted a link at a time, not a machine at a time (a fleet: 50 links, 50,000 machines); machine by
        # machine only for links with mirrors (a mirror may be down while its link is up)
        mirrored = {link for link in counts if link.mirrors}
        for link, n in counts.items():
            if link not in mirrored:
                self._count(st, link.connected, link.state, n)
        if mirrored:
            up = {link: link.connected for link in mirrored}
            for e in entries:
                if e.link in mirrored:
                    self._count(st, up[e.link] and (e.mirror is None or e.connected), e.link.state)
        for link in links:
            if not counts.get(link) and not link.infos:
                self._count(st, False, link.state)
        return st

    @staticmethod
    def _count(st: Status, connected: bool, state: str, n: int = 1) -> None:
        st.total += n
        if connected:
            st.connected += n
        elif state in (NEW, CONNECTING):
            st.connecting += n
        else:
            st.disconnected += n

    def state_union(self) -> list[str]:
        """Every state name of every machine (for completion of filters)."""
        out: dict[str, None] = {}
        for e in self.entries():
            for n in e.names:
                out.setdefault(n)
        return list(out)

    # ------------------------------------------------------------------ background: retries and addr files

    def start_background(self, watch: bool = True, interval: float = 0.5) -> None:
        """Retry failed links and (``watch``) poll the addr files for new or changed addresses."""
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
        for link in self.links():
            if link.state == FAILED and not link.busy and now >= link.next_try:
                threading.Thread(target=self._connect, args=(link, self.connect_timeout), daemon=True,
                                 name="arpc-retry").start()

    def poll_files(self) -> list[Link]:
        """Re-read the watched addr files; connects new addresses at once. Removed files are ignored."""
        found: dict[str, str] = {}
        if self._directory is not None:
            try:
                found = read_addr_dir(self._directory, strict=False)
            except Failed:
                found = {}
        if self._file is not None and os.path.exists(self._file):
            try:
                found[self._file] = read_addr_file(self._file)
            except Failed:
                pass
        replaced: dict[str, str] = {}
        changed = False
        for p, addr in found.items():
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
        for link in new:
            threading.Thread(target=self._connect, args=(link, self.connect_timeout), daemon=True,
                             name="arpc-connect").start()
        self._changed()
        return new

    # ------------------------------------------------------------------ notices, closing

    def _mach_notice(self, link: Link, ids: list[str], ok: bool) -> None:
        """One notice for the machines of ``link`` that changed to ``ok`` (21 machines: one line, not 21)."""
        with self._lock:
            changed = [mid for mid in ids if self._noticed.get(mid) != ok]
            for mid in changed:
                self._noticed[mid] = ok
            quiet = self._quiet
        if quiet or not changed:
            return
        if len(changed) <= NOTICE_NAMES:
            who = ", ".join(changed)
        else:
            who = f"{len(changed)} machines at {link.address} ({', '.join(changed[:3])}, ...)"
        self._notice(f"connected to {who}" if ok else f"disconnected from {who}, reconnecting", not ok)

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

    def _close_link(self, link: Link) -> None:
        # Mirrors are not closed one by one: closing the client disposes them. (A mirror's own close() disposes
        # it through Machine.dispose, which removes Start, and a connected mirror sends that to the source.)
        with self._lock:
            link.closed = True
            conn = link.conn
            link.mirrors = {}
            link.conn = None
        if conn is not None:
            _close_quietly(conn)

    def close(self) -> None:
        self._stop.set()
        for link in self.links():
            self._close_link(link)
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
