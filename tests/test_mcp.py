"""The MCP server (`ai-pipelines mcp`) as a host runs it, and `McpToolbox` as agents use it:
the SDK's own client over stdio, the toolbox over stdio (threads, errors, a server that
died), and streamable HTTP on 127.0.0.1. Every server process is stopped at the end."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client

from ai_pipelines.mcp_server import ServerState, build_server, serve
from resources.support.mcp_tools import McpServerConfig, McpToolbox
from tests.conftest import CLI, free_port, write_desk
from tests.fake_openai import FakeOpenAI

# Tiers, marked per test: the configuration checks are unit; servers over stdio and HTTP, integration.

TOOLS = {"search_help_centre", "lookup_customer", "lookup_order", "compute_refund", "fact_check", "search_documents"}


@pytest.fixture
def server_env(tmp_path: Path, llm: FakeOpenAI) -> dict[str, str]:
    """The child server's settings: a temporary data dir, embeddings and models from the fake server."""
    return {
        "AI_PIPELINES_DATA_DIR": str(tmp_path / "data"),
        "AI_PIPELINES_EMBEDDINGS_BASE_URL": llm.base_url,
        "AI_PIPELINES_EMBEDDINGS_MODEL": "fake-embedder",
        "AI_PIPELINES_LLM_BASE_URL": llm.base_url,
    }


@pytest.fixture
def server_args(tmp_path: Path) -> list[str]:
    return ["mcp", "--support-desk-dir", str(write_desk(tmp_path / "desk"))]


def server_pids(marker: str) -> list[int]:
    """Processes whose command line holds `marker` (the test's own folder): the servers it started."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture
def no_leftover_servers(tmp_path: Path):
    yield
    deadline = time.monotonic() + 10
    while server_pids(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    leftover = server_pids(str(tmp_path))
    for pid in leftover:
        os.kill(pid, signal.SIGKILL)
    assert not leftover, f"server processes left running: {leftover}"


@pytest.mark.integration
def test_the_sdk_stdio_client_lists_and_calls_the_tools(tmp_path, server_env, server_args, no_leftover_servers):
    parameters = StdioServerParameters(command=str(CLI), args=server_args, env=server_env, cwd=str(tmp_path))

    async def session() -> None:
        async with Client(stdio_client(parameters, errlog=sys.stderr), read_timeout_seconds=60) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == TOOLS
            assert tools["compute_refund"].input_schema["required"] == ["order_id"]
            order = await client.call_tool("lookup_order", {"order_id": "O5"})
            assert not order.is_error and order.structured_content["customer_id"] == "C2"
            refund = await client.call_tool("compute_refund", {"order_id": "O2", "as_of": "2025-03-10"})
            assert refund.structured_content == {
                **refund.structured_content,
                "eligible": True,
                "amount_eur": 380.0,
                "requires_approval": True,
            }
            late = await client.call_tool("compute_refund", {"order_id": "O1", "as_of": "2025-06-01"})
            assert late.structured_content["eligible"] is False
            search = await client.call_tool("search_help_centre", {"query": "I forgot my password", "limit": 1})
            assert [h["slug"] for h in search.structured_content["hits"]] == ["reset-password"]
            missing = await client.call_tool("lookup_order", {"order_id": "O999"})
            assert missing.is_error and "order O999 not found" in missing.content[0].text

    anyio.run(session)


@pytest.mark.integration
def test_the_toolbox_serves_an_agent_over_stdio(tmp_path, server_env, server_args, no_leftover_servers):
    config = McpServerConfig(name="desk", command=[str(CLI), *server_args], env=server_env, cwd=str(tmp_path))
    with McpToolbox(config) as toolbox:
        specs = {s.name: s for s in toolbox.specs()}
        assert set(specs) == TOOLS and specs["lookup_order"].openai()["function"]["parameters"]["required"] == [
            "order_id"
        ]

        def call(name: str, arguments: dict | str) -> dict:
            answer = toolbox.call(name, arguments)
            assert answer.ok, answer.content
            return json.loads(answer.content)

        assert call("lookup_order", '{"order_id": "O1"}')["amount_eur"] == 90.0
        assert call("compute_refund", {"order_id": "O3", "as_of": "2025-03-10"})["eligible"] is False  # failed payment
        assert call("search_help_centre", {"query": "export notebooks as PDF"})["hits"][0]["slug"] == "export-notes"
        # Agents call from worker threads; one session serves them all.
        with ThreadPoolExecutor(4) as pool:
            orders = list(pool.map(lambda i: call("lookup_order", {"order_id": f"O{i}"})["order_id"], range(1, 6)))
        assert orders == ["O1", "O2", "O3", "O4", "O5"]

        unknown = toolbox.call("issue_refund", {"order_id": "O1"})
        assert not unknown.ok and unknown.error_kind == "unknown_tool" and "compute_refund" in unknown.content
        for bad in ({"order": "O1"}, {"order_id": "O1", "amount_eur": -1}, "not json"):
            answer = toolbox.call("compute_refund", bad)
            assert not answer.ok and answer.error_kind == "invalid_arguments", answer
        failed = toolbox.call("lookup_customer", {"customer_id": "C404"})
        assert not failed.ok and failed.error_kind == "tool_error" and "customer C404 not found" in failed.content

        # The server dies: the call in flight fails as a result, and the next session starts on its own.
        (pid,) = server_pids(str(tmp_path))
        os.kill(pid, signal.SIGKILL)
        answers = [toolbox.call("lookup_order", {"order_id": "O1"}) for _ in range(2)]
        assert answers[-1].ok, answers
        assert all(a.ok or a.error_kind == "tool_error" for a in answers)
    assert not toolbox.call("lookup_order", {"order_id": "O1"}).ok  # closed


@pytest.mark.integration
def test_streamable_http_on_loopback(tmp_path, server_env, server_args, no_leftover_servers):
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [str(CLI), *server_args, "--transport", "http", "--port", str(port)],
        cwd=tmp_path,
        env={**os.environ, **server_env},
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the HTTP server did not answer within 30 s"
                time.sleep(0.1)
        with McpToolbox(
            McpServerConfig(name="desk-http", url=f"http://127.0.0.1:{port}/mcp", timeout_seconds=30)
        ) as toolbox:
            assert {s.name for s in toolbox.specs()} == TOOLS
            answer = toolbox.call("compute_refund", {"order_id": "O1", "as_of": "2025-03-20", "amount_eur": 40})
            assert answer.ok and json.loads(answer.content)["amount_eur"] == 40.0, answer
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()


@pytest.mark.integration
def test_listing_builds_nothing_and_every_tool_answers_in_process(tmp_path, llm):
    from ai_pipelines.settings import Settings

    settings = Settings(
        data_dir=tmp_path / "data",
        llm_base_url=llm.base_url,
        embeddings_base_url=llm.base_url,
        embeddings_model="fake-embedder",
        refund_limit_eur=500,
    )
    state = ServerState(settings, support_desk_dir=write_desk(tmp_path / "desk"))
    server = build_server(state)

    async def session() -> None:
        async with Client(server) as client:
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS
            assert state._desk is None and state._verifier is None  # listing is instant: nothing built yet
            refund = await client.call_tool("compute_refund", {"order_id": "O2", "as_of": "2025-03-10"})
            assert (
                refund.structured_content["requires_approval"] is False
            )  # the deployment's limit (500), not the default
            verdict = await client.call_tool(
                "fact_check", {"claim": "Helios Grid opened its battery plant in Seville."}
            )
            assert verdict.structured_content["verdict"] in {"supported", "refuted", "not_enough_info"}
            found = await client.call_tool(
                "search_documents", {"query": "Helios Grid Seville battery plant", "limit": 2}
            )
            hits = found.structured_content["hits"]
            assert len(hits) == 2 and all("Helios Grid" in h["text"] for h in hits)

    anyio.run(session)


@pytest.mark.unit
def test_http_binds_loopback_only():
    with pytest.raises(ValueError, match="loopback"):
        serve("http", host="0.0.0.0")
    with pytest.raises(ValueError, match="command .* or a url"):
        McpServerConfig(name="neither")
    configs = McpServerConfig.list_from_json(
        '[{"name": "a", "command": ["ai-pipelines", "mcp"]}, {"name": "b", "url": "http://127.0.0.1:8765/mcp"}]'
    )
    assert [c.name for c in configs] == ["a", "b"] and McpServerConfig.list_from_json("") == []
