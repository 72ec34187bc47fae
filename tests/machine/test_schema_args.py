"""Declared args (``State(args=...)``): forms accepted, SchemaError on a bad declaration, merged per machine."""

from __future__ import annotations

import pickle

import pytest

from machine import Arg, Machine, SchemaError, State, declared_args


def test_forms_and_readback() -> None:
    st = State(args={"job": Arg(int, "job number"), "path": str, "meta": "JSON"})
    assert st.args == {"job": Arg("int", "job number"), "path": Arg("str"), "meta": Arg("json")}
    assert st.args["job"].type == "int" and st.args["job"].help == "job number"
    assert State(args=[("job", int)]) == State(args={"job": Arg(int)}) != State()
    assert pickle.loads(pickle.dumps(st)) == st
    assert st.replace(args={}) == State() and State().extend(st).args == st.args
    with pytest.raises(TypeError):
        st.args["x"] = Arg(int)  # type: ignore[index]


@pytest.mark.parametrize(("args", "message"), [
    ({"a b": int}, "arg name 'a b' must be an identifier"),
    ({"x" * 65: int}, "must be an identifier of at most 64 characters"),
    ({"a": list}, "arg type <class 'list'> is not one of int, float, bool, str, bytes, json (arg a)"),
    ({"a": "date"}, "arg type 'date' is not one of"),
    ({"a": {}}, "arg type {} is not one of"),
    ([1], "args must be a dict of name -> Arg"),
    (5, "args must be a dict of name -> Arg"),
    ({f"a{i}": int for i in range(33)}, "33 args, at most 32"),
])
def test_a_bad_declaration_is_a_schema_error(args: object, message: str) -> None:
    with pytest.raises(SchemaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        State(args=args)  # type: ignore[arg-type]


def test_bad_help_and_the_state_named_in_a_dict_schema() -> None:
    with pytest.raises(SchemaError, match="help must be a str of at most 200"):
        Arg(int, "x" * 201)
    with pytest.raises(SchemaError, match=r"arg type 'date' .* \(arg a\) \(state A\)"):
        Machine({"A": {"args": {"a": "date"}}})


def test_one_type_per_name_in_a_machine() -> None:
    with pytest.raises(SchemaError, match="arg a is int in state A but str in state B"):
        Machine({"A": State(args={"a": int}), "B": State(args={"a": str})})
    m = Machine({"A": State(args={"a": Arg(int, "first")}), "B": State(args={"a": int, "b": bool})})
    assert declared_args(m) == {"a": Arg(int, "first"), "b": Arg(bool)}
    assert declared_args(m.schema) == declared_args(m)
    assert declared_args(Machine({"A": State()})) == {}
