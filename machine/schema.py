"""States, schemas and what is precomputed per schema (indexes, relation sets, the require topology, bounded caches);
the checks of state names against a machine's schema."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .errors import SchemaError, StateError

if TYPE_CHECKING:
    from .api import MachineApi
    from .machine import Machine

EXCEPTION = "Exception"
_HANDLER_SUFFIXES = ("Enter", "Exit", "State", "End")


def _names(value: Iterable[str] | str) -> tuple[str, ...]:
    # a lone string is one name, not an iterable of characters
    if isinstance(value, str):
        return (value,)
    return tuple(value)


_FIELDS = ("require", "remove", "add", "after", "auto", "multi", "tags", "args")

# Declared args (``State(args=...)``): the value types a shell can convert text to, and the bounds that keep a
# declaration small on the wire.
ARG_TYPES = ("int", "float", "bool", "str", "bytes", "json")
_PY_TYPES: dict[Any, str] = {int: "int", float: "float", bool: "bool", str: "str", bytes: "bytes"}
MAX_ARGS = 32  # per state
MAX_ARG_NAME = 64
MAX_ARG_HELP = 200


class Arg:
    """The declaration of one mutation arg: its value type and a line of help. Immutable and hashable.

    ``type`` is one of ``int``, ``float``, ``bool``, ``str``, ``bytes`` (the Python types or their names) or
    ``"json"`` (any JSON value); ``arg.type`` is always the name. Raises SchemaError for anything else.
    """

    __slots__ = ("type", "help")
    type: str
    help: str

    def __init__(self, type: Any = "str", help: str = "") -> None:  # noqa: A002 - the declaration's words
        try:
            name = type.lower() if isinstance(type, str) else _PY_TYPES.get(type)
        except TypeError:  # unhashable
            name = None
        if name not in ARG_TYPES:
            shown = repr(type)
            shown = shown if len(shown) <= 60 else shown[:60] + "..."
            raise SchemaError(f"schema error: arg type {shown} is not one of {', '.join(ARG_TYPES)}")
        if not isinstance(help, str) or len(help) > MAX_ARG_HELP:
            raise SchemaError(f"schema error: arg help must be a str of at most {MAX_ARG_HELP} characters")
        object.__setattr__(self, "type", name)
        object.__setattr__(self, "help", help)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Arg is immutable: cannot set {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Arg):
            return NotImplemented
        return self.type == other.type and self.help == other.help

    def __hash__(self) -> int:
        return hash((self.type, self.help))

    def __repr__(self) -> str:
        return f"Arg({self.type!r}, {self.help!r})" if self.help else f"Arg({self.type!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Arg, (self.type, self.help))


_NO_ARGS: Mapping[str, Arg] = MappingProxyType({})


def check_args(args: Any, where: str = "") -> Mapping[str, Arg]:
    """A state's ``args`` declaration as a read-only ``{name: Arg}``; SchemaError naming what is wrong.

    Accepts a mapping (or pairs) of name -> ``Arg``, a type, or a type name; names are identifiers of at most
    64 characters, at most 32 args a state.
    """
    if not args:
        return _NO_ARGS
    at = f" of state {where}" if where else ""
    try:
        pairs = list(args.items() if isinstance(args, Mapping) else args)
    except (TypeError, ValueError):
        raise SchemaError(f"schema error: args{at} must be a dict of name -> Arg") from None
    if len(pairs) > MAX_ARGS:
        raise SchemaError(f"schema error: {len(pairs)} args{at}, at most {MAX_ARGS}")
    out: dict[str, Arg] = {}
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise SchemaError(f"schema error: args{at} must be a dict of name -> Arg")
        name, decl = pair
        if not isinstance(name, str) or not name.isidentifier() or len(name) > MAX_ARG_NAME:
            raise SchemaError(f"schema error: arg name {name!r}{at} must be an identifier of at most "
                              f"{MAX_ARG_NAME} characters")
        try:
            out[name] = decl if isinstance(decl, Arg) else Arg(decl)
        except SchemaError as e:
            raise SchemaError(f"{e} (arg {name}{at})") from None
    return MappingProxyType(out)


class State:
    """One state of a schema: its relations to other states and its flags. Immutable and hashable.

    Relation fields accept any iterable of names (or a single name) and store tuples.
    """

    # a plain class rather than a dataclass: importing dataclasses (and inspect) costs the shell's cold start
    __slots__ = ("require", "remove", "add", "after", "auto", "multi", "tags", "_args_key", "_hash")
    require: tuple[str, ...]
    remove: tuple[str, ...]
    add: tuple[str, ...]
    after: tuple[str, ...]
    auto: bool
    multi: bool
    tags: tuple[str, ...]
    _args_key: tuple[tuple[str, Arg], ...]
    _hash: int

    def __init__(
        self,
        require: Iterable[str] | str = (),
        remove: Iterable[str] | str = (),
        add: Iterable[str] | str = (),
        after: Iterable[str] | str = (),
        auto: bool = False,
        multi: bool = False,
        tags: Iterable[str] | str = (),
        args: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
    ) -> None:
        sa = object.__setattr__
        sa(self, "require", _names(require))
        sa(self, "remove", _names(remove))
        sa(self, "add", _names(add))
        sa(self, "after", _names(after))
        sa(self, "auto", bool(auto))
        sa(self, "multi", bool(multi))
        sa(self, "tags", _names(tags))
        # most states declare no args: one attribute, no call (``args`` is built when read)
        sa(self, "_args_key", tuple(check_args(args).items()) if args else ())
        # schemas are dict keys of the compiled-schema cache: hash once
        sa(self, "_hash", hash(self._key()))

    @property
    def args(self) -> Mapping[str, Arg]:
        """The declared args, a read-only ``{name: Arg}`` (section "Declared args" of the manual)."""
        return MappingProxyType(dict(self._args_key)) if self._args_key else _NO_ARGS

    def _key(self) -> tuple[Any, ...]:
        return (self.require, self.remove, self.add, self.after, self.auto, self.multi, self.tags, self._args_key)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"State is immutable: cannot set {name!r} (use State.replace)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"State is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, State):
            return NotImplemented
        return self._hash == other._hash and self._key() == other._key()

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        shown = [f"{f}={getattr(self, f)!r}" for f in _FIELDS[:-1]]
        if self.args:
            shown.append(f"args={dict(self.args)!r}")
        return "State(" + ", ".join(shown) + ")"

    def __reduce__(self) -> tuple[Any, ...]:
        return (State, self._key())

    def replace(self, **changes: Any) -> State:
        """A copy with the given fields changed."""
        unknown = set(changes) - set(_FIELDS)
        if unknown:
            raise TypeError(f"State has no field(s) {', '.join(sorted(unknown))}")
        return State(**{f: changes.get(f, getattr(self, f)) for f in _FIELDS})

    def extend(self, other: State) -> State:
        """Union of both states' relations (deduplicated); flags are OR-ed."""

        def merge(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(dict.fromkeys(a + b))

        return State(
            require=merge(self.require, other.require),
            remove=merge(self.remove, other.remove),
            add=merge(self.add, other.add),
            after=merge(self.after, other.after),
            auto=self.auto or other.auto,
            multi=self.multi or other.multi,
            tags=merge(self.tags, other.tags),
            args={**self.args, **other.args},
        )


Schema = dict[str, State]


class StateNames:
    """Declare a schema's names once, as class annotations, so a typo fails at import time.

    ``class S(StateNames): Foo: str`` makes ``S.Foo == "Foo"``; ``S.names()`` lists them in order.
    Subclasses inherit their bases' names.
    """

    _names: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = [n for n in cls.__dict__.get("__annotations__", {}) if not n.startswith("_")]
        for name in own:
            setattr(cls, name, name)
        cls._names = tuple(dict.fromkeys([*cls._names, *own]))

    @classmethod
    def names(cls) -> list[str]:
        """The declared names, bases first, in declaration order."""
        return list(cls._names)


def check_name(name: object) -> str:
    """Validate one state name; return it or raise SchemaError."""
    if not isinstance(name, str) or not name.isidentifier():
        raise SchemaError(f"schema error: invalid state name {name!r} (must be an identifier)")
    if name == "Any":
        raise SchemaError("schema error: state name 'Any' is reserved for global handlers")
    for suffix in _HANDLER_SUFFIXES:
        if name.endswith(suffix):
            raise SchemaError(
                f"schema error: state name {name!r} ends with {suffix!r}, which is reserved for handlers"
            )
    return name


def normalize(schema: Mapping[str, State | Mapping[str, Any]], *, add_exception: bool) -> dict[str, State]:
    """Copy a schema, turning plain dicts into State, checking names, appending Exception when asked."""
    if not isinstance(schema, Mapping):
        raise SchemaError(f"schema error: a schema is a dict of name -> State, got {type(schema).__name__}")
    out: dict[str, State] = {}
    for name, st in schema.items():
        check_name(name)
        if isinstance(st, State):
            out[name] = st
        elif isinstance(st, Mapping):
            try:
                out[name] = State(**st)
            except TypeError as exc:
                raise SchemaError(f"schema error: state {name}: {exc}") from None
            except SchemaError as exc:
                raise SchemaError(f"{exc} (state {name})") from None
        else:
            raise SchemaError(f"schema error: state {name} must be a State, got {type(st).__name__}")
    if add_exception and EXCEPTION not in out:
        out[EXCEPTION] = State(multi=True)
    merged_args(out)  # one type per arg name
    return out


def merged_args(schema: Mapping[str, State]) -> dict[str, Arg]:
    """Every arg the states of ``schema`` declare (first declaration wins for the help); SchemaError when two
    states give one name different types."""
    out: dict[str, Arg] = {}
    where: dict[str, str] = {}
    for state_name, st in schema.items():
        for name, decl in st._args_key:
            seen = out.get(name)
            if seen is None:
                out[name], where[name] = decl, state_name
            elif seen.type != decl.type:
                raise SchemaError(f"schema error: arg {name} is {seen.type} in state {where[name]} but "
                                  f"{decl.type} in state {state_name}")
    return out


def declared_args(mach_or_schema: MachineApi | Mapping[str, State]) -> dict[str, Arg]:
    """The args a machine (a mirror too) or a schema declares, merged over its states: ``{name: Arg}``."""
    if isinstance(mach_or_schema, Mapping):
        return merged_args(mach_or_schema)
    c = getattr(mach_or_schema, "_c", None)
    if c is not None:  # a local machine: merged once when its schema was compiled
        return dict(c.args)
    return merged_args(mach_or_schema.schema)  # any other MachineApi (a RemoteMachine: its mirrored schema)


def parse(schema: dict[str, State]) -> tuple[dict[str, State], list[str]]:
    """Apply the spec's parse rules; return the cleaned schema and the relation-conflict errors.

    Per state: drop itself from every relation, an ``add`` entry also in ``remove`` wins (dropped from remove),
    unknown names are dropped from add/remove/after (kept in require, so such a state never activates), and
    every ``require`` entry also in ``remove`` is an error.
    """
    errors: list[str] = []
    clean: dict[str, State] = {}
    for name, st in schema.items():
        remove = [r for r in dict.fromkeys(st.remove) if r != name]
        add: list[str] = []
        for a in dict.fromkeys(st.add):
            if a == name:
                continue
            if a in remove:
                remove.remove(a)  # within one state, add wins over remove
            if a in schema:
                # an unknown name is dropped from add even when remove named it too (the spec keeps it there,
                # which can only fail later, when the state activates)
                add.append(a)
        after = [a for a in dict.fromkeys(st.after) if a != name and a in schema]
        require = [r for r in dict.fromkeys(st.require) if r != name]
        for r in require:
            if r in remove:
                errors.append(f"schema error: require-remove conflict for {name} to {r}")
        remove = [r for r in remove if r in schema]
        clean[name] = st.replace(require=tuple(require), remove=tuple(remove), add=tuple(add), after=tuple(after))
    return clean, errors


_COMPILED: dict[Any, Compiled] = {}
_LAST: tuple[Any, Compiled | None] = ((), None)  # (items, compiled) of the last call: machines come in runs
_COMPILED_MAX = 256


def compiled_for(schema: Mapping[str, State | Mapping[str, Any]]) -> Compiled:
    """The compiled form of ``schema`` (Exception appended), shared by every machine built from an equal one.

    Raises SchemaError for an invalid schema.
    """
    global _LAST
    items = tuple(schema.items())
    last_items, last = _LAST
    if last is not None and items == last_items:  # item by item, identity first: no State hashing
        return last
    try:
        key: Any = items
        c = _COMPILED.get(key)
    except TypeError:  # plain-dict states are not hashable: compile without caching the raw form
        key, c = None, None
    if c is None:
        full = normalize(schema, add_exception=True)
        full_key = tuple(full.items())
        c = _COMPILED.get(full_key)
        if c is None:
            if len(_COMPILED) >= _COMPILED_MAX:
                _COMPILED.clear()
            c = _COMPILED[full_key] = Compiled(full)
        if key is not None:
            _COMPILED[key] = c
    _LAST = (items, c)
    return c


# Bounds of the resolver caches of one compiled schema (shared by the machines of that schema); a full cache
# is emptied and refilled. With at most _COMPILED_MAX schemas cached, the process holds at most
# 256 x (4096 plans + 4096 auto entries), and the plans ``recent`` keeps past a clear of ``plans`` (at most 4096
# a mutation type); a machine's own cache of bound handlers per plan has PLAN_CACHE_MAX too.
PLAN_CACHE_MAX = 4096
AUTO_CACHE_MAX = 4096


class Compiled:
    """A parsed schema with everything the resolver needs precomputed, and the caches of resolved plans.

    Immutable once built, but for those caches (bounded by PLAN_CACHE_MAX and AUTO_CACHE_MAX), so machines with
    equal schemas share one.
    """

    __slots__ = (
        "schema", "names", "index", "require", "remove", "add", "after", "auto", "multi", "topo",
        "auto_names", "errors", "cycle", "plans", "autos", "args", "recent",
    )

    def __init__(self, schema: dict[str, State], prev_topo: dict[str, int] | None = None) -> None:
        clean, errors = parse(schema)
        self.schema = clean
        self.errors = errors
        self.names: tuple[str, ...] = tuple(clean)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.require = {n: s.require for n, s in clean.items()}
        self.remove = {n: frozenset(s.remove) for n, s in clean.items()}
        self.add = {n: s.add for n, s in clean.items()}
        self.after = {n: frozenset(s.after) for n, s in clean.items()}
        self.auto = frozenset(n for n, s in clean.items() if s.auto)
        self.multi = frozenset(n for n, s in clean.items() if s.multi)
        self.auto_names = tuple(n for n in self.names if n in self.auto)
        self.args = merged_args(clean)  # SchemaError when two states type one arg differently
        topo, cycle = _require_topology(self.names, self.require)
        self.cycle = cycle
        # a require cycle keeps the previous topology (spec 5.1)
        self.topo = prev_topo if cycle is not None and prev_topo is not None else topo
        # resolver caches: (type, called, before, is_auto, is_check) -> Plan; active states -> auto states
        self.plans: dict[tuple[Any, ...], Any] = {}
        self.autos: dict[tuple[str, ...], tuple[tuple[str, ...], bool, Any]] = {}  # see execution.auto_entry
        # the plain path's first look (execution.recent_plan): by mutation type, called states -> the last plan made
        # for them (neither auto nor a check), used while the active states are the very tuple it was made from
        self.recent: list[dict[tuple[str, ...], Any]] = [{}, {}, {}, {}]


def _require_topology(
    names: tuple[str, ...], require: dict[str, tuple[str, ...]]
) -> tuple[dict[str, int], str | None]:
    """DFS post-order over state -> required state edges; roots in index order, neighbours in require order.

    Only states that appear in some require edge get a position. Returns (positions, state with a cycle or None).
    """
    in_edge = {n for n in names if require.get(n)}
    for n in names:
        in_edge.update(require.get(n, ()))
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    cycle: str | None = None

    def visit(n: str) -> None:
        nonlocal cycle
        mark = state.get(n)
        if mark == 2:
            return
        if mark == 1:
            if cycle is None:
                cycle = n
            return
        state[n] = 1
        for r in require.get(n, ()):
            visit(r)
        state[n] = 2
        order.append(n)

    for n in names:
        if n in in_edge:
            visit(n)
    # required-but-unknown names are visited through their requirers
    return {n: i for i, n in enumerate(order)}, cycle


# Name checks of a machine's calls (methods of Machine: ``_called``, ``_unknown``, ``_check_names``).

def called_names(mach: Machine, states: tuple[Any, ...]) -> tuple[str, ...]:
    """``states`` without repeats; StateError (TypeError for a non-str) when one is not in the schema."""
    index = mach._c.index
    for s in states:
        if s not in index:
            unknown_names(mach, states)
    if len(states) > 1 and len(set(states)) != len(states):
        return tuple(dict.fromkeys(states))
    return states


def unknown_names(mach: Machine, states: Iterable[Any]) -> None:
    """Raise for the names of ``states`` not in the schema: TypeError for a non-str, else StateError."""
    index = mach._c.index
    bad = []
    for s in states:
        if not isinstance(s, str):
            raise TypeError(f"state names are str, got {type(s).__name__} (machine {mach._id})")
        if s not in index:
            bad.append(s)
    raise StateError(dict.fromkeys(bad), mach._id)


def check_names(mach: Machine, states: Iterable[str]) -> None:
    """StateError (TypeError for a non-str) when one of ``states`` is not in the schema."""
    index = mach._c.index
    for s in states:
        if s not in index:
            unknown_names(mach, states)
