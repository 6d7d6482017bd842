"""Parity with AWS's own runtime interface client: the same handlers through ``runtime: provided`` with
``python -m awslambdaric`` give the same results, errors and timeouts as the router's bootstrap."""

from __future__ import annotations

import json
import sys

import pytest

from router.invocation import Invocation, Outcome

from .conftest import MakeInvoker, invocation

pytest.importorskip("awslambdaric")


async def _both(make_invoker: MakeInvoker, handler: str, inv: Invocation, **fields: object) -> tuple:
    ours = await make_invoker("provided", name=f"ours-{handler.split('.')[1]}", handler=handler, **fields)
    ric = await make_invoker("provided", name=f"ric-{handler.split('.')[1]}", runtime="provided",
                             handler=handler, environment={"PYTHON": sys.executable}, **fields)
    first = await ours.invoke(inv)
    second = await ric.invoke(inv)
    return first, second


async def test_echo_parity(make_invoker: MakeInvoker) -> None:
    inv = invocation({"a": [1, 2.5, "x"], "b": None, "c": {"d": True}})
    ours, ric = await _both(make_invoker, "app.echo", inv)
    assert ours.ok
    assert ric.ok
    assert ours.payload == ric.payload


async def test_error_parity(make_invoker: MakeInvoker) -> None:
    inv = invocation({"message": "same"})
    ours, ric = await _both(make_invoker, "app.fail", inv)
    assert ours.outcome is ric.outcome is Outcome.ERROR
    assert ours.function_error == ric.function_error == "Unhandled"
    assert ours.error_type == ric.error_type
    assert json.loads(ours.payload) == json.loads(ric.payload)
    assert json.loads(ours.payload)["errorType"] == "ValueError"
    ours_error_line = next(line for line in ours.logs.split("\n") if line.startswith("[ERROR]"))
    ric_error_line = next(line for line in ric.logs.split("\n") if line.startswith("[ERROR]"))
    assert ours_error_line == ric_error_line


async def test_marshalling_parity(make_invoker: MakeInvoker) -> None:
    """Results are encoded as Lambda's runtime does (simplejson): a Decimal as its exact digits, bytes as
    UTF-8 text, an object with _asdict() as that dict, a namedtuple as an object (simplejson's
    namedtuple_as_object) wherever it is and a plain tuple as an array, the same bytes out."""
    ours, ric = await _both(make_invoker, "app.marshal", invocation())
    assert ours.ok, ours.payload
    assert ric.ok, ric.payload
    assert ours.payload == ric.payload
    assert b'"price": 10.50' in ours.payload
    assert b'"precise": 0.12345678901234567890123' in ours.payload
    result = json.loads(ours.payload)
    assert result["point"] == {"x": 1, "y": 2.5}
    assert result["pair"] == [{"x": 9, "y": {"deep": {"x": 1, "y": 1}}}, "text"]
    assert result["points"] == [{"x": 5, "y": 6}, [7, 8]]


async def test_a_result_that_holds_itself_is_the_same_marshal_error(make_invoker: MakeInvoker) -> None:
    """A result that holds itself (a cycle, here beside a namedtuple) is refused as awslambdaric refuses
    it: Runtime.MarshalError, the same message."""
    ours, ric = await _both(make_invoker, "app.cycle", invocation())
    assert ours.outcome is ric.outcome is Outcome.ERROR
    error = json.loads(ours.payload)
    assert error["errorType"] == "Runtime.MarshalError"
    assert error == json.loads(ric.payload)


async def test_stack_trace_parity(make_invoker: MakeInvoker) -> None:
    """The error's stackTrace has no column markers (Python 3.11+'s ~~~^^^ lines), as awslambdaric's."""
    ours, ric = await _both(make_invoker, "app.subscript", invocation())
    assert ours.outcome is ric.outcome is Outcome.ERROR
    assert json.loads(ours.payload) == json.loads(ric.payload)
    assert not any("^" in line for line in json.loads(ours.payload)["stackTrace"])


async def test_timeout_parity(make_invoker: MakeInvoker) -> None:
    inv = invocation({"seconds": 30})
    ours, ric = await _both(make_invoker, "app.sleep", inv, timeout=1)
    assert ours.outcome is ric.outcome is Outcome.TIMEOUT
    assert ours.payload == ric.payload
