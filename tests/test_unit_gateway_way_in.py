"""The session is the only way into the model gateway: the resource offers sessions and no calls,
and no caller hands the gateway a ledger of its own (a session owns its bookkeeping)."""

import ast

import pytest
from pydantic import BaseModel

from resources import ModelResource, ModelSession
from tests.import_layers import project_modules

pytestmark = pytest.mark.unit

CALLS = {"structured", "traced_structured", "tool_step", "map_structured", "map_traced_structured", "answer"}


def test_the_resource_offers_sessions_and_the_session_the_calls():
    own = {
        name
        for name, value in vars(ModelResource).items()
        if callable(value) and not name.startswith("_") and not hasattr(BaseModel, name)  # pydantic's own hooks
    }
    # Beside the sessions, the registry of submitted provider batches: it sends no chat call of its
    # own (a batch is submitted by a session, for the requests of its computation).
    assert own == {"session", "open_session", "provider_batches"}
    assert not any(hasattr(ModelResource, name) for name in CALLS)
    assert all(callable(getattr(ModelSession, name)) for name in CALLS)


def test_no_call_outside_the_gateway_passes_a_ledger():
    passed = [
        f"{module}:{node.lineno}"
        for module, path in project_modules().items()
        if not module.startswith("resources.gateway")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and any(k.arg == "ledger" for k in node.keywords)
    ]
    assert passed == []
