"""The tools of any MCP server, behind the same `Toolbox` interface as local functions.

An agent should not be wired to where its tools live: a deployment may serve the
support desk's tools from this repository's own server (`ai-pipelines mcp`) or from
another team's, over stdio or streamable HTTP, and the agent code stays the same.

The MCP client is async and holds a session open; agents call tools synchronously from
worker threads. Each toolbox therefore runs one private event loop on a background
thread that opens the session once and keeps it open, and `call` submits each request
to that loop and waits for its answer. A session that dropped (server exited, network)
is reopened on the next call; a call in flight when it dropped is reported as failed,
not retried, since a tool call may have had effects. `close()` (or `with`) ends the
session and stops a stdio server's process.

As with `FunctionToolbox`, nothing the model got wrong raises: an unknown tool,
arguments that fail the tool's JSON Schema, a tool that failed and a server that is
unreachable all come back as a `ToolResult` with `ok=False`. Only `specs()` raises when
the server cannot be reached, since an agent cannot be offered tools nobody can list.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import re
import sys
import threading
from pathlib import Path
from typing import IO, Any, Awaitable, Callable, TypeVar

import anyio
import jsonschema
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_types import CONNECTION_CLOSED
from pydantic import BaseModel, Field, TypeAdapter, model_validator

from resources.support.tools import ToolResult, ToolSpec, as_text, parse_arguments, unknown_tool

T = TypeVar("T")
_CLOSE_SECONDS = 10.0
# The Python SDK reports a server-side argument validation failure as a tool error with this text.
_SDK_VALIDATION_ERROR = re.compile(r"^Error executing tool \S+: \d+ validation errors? for ")


class McpServerConfig(BaseModel):
    """One MCP server: a command to start over stdio, or the URL of a streamable-HTTP endpoint.

    A list of these can be given in settings as JSON, e.g.
    `[{"name": "desk", "command": ["ai-pipelines", "mcp"]}, {"name": "kb", "url": "http://127.0.0.1:8765/mcp"}]`.
    """

    name: str = Field(min_length=1, description="Names the server in messages and logs.")
    command: list[str] = Field(default=[], description="Program and arguments of a stdio server.")
    url: str = Field(default="", description="Streamable-HTTP endpoint, e.g. http://127.0.0.1:8765/mcp.")
    env: dict[str, str] = Field(
        default={},
        description="Environment of a stdio server, on top of a safe minimum (PATH, HOME, ...): "
        "the rest of this process's environment, secrets included, is not passed on.",
    )
    cwd: str = Field(default="", description="Working directory of a stdio server; empty = this process's.")
    timeout_seconds: float = Field(default=60.0, gt=0, description="Per request: connecting, listing, each tool call.")
    log_file: str = Field(default="", description="Append a stdio server's stderr here; empty = this process's stderr.")

    @model_validator(mode="after")
    def _one_transport(self) -> "McpServerConfig":
        if bool(self.command) == bool(self.url):
            raise ValueError(f"MCP server {self.name!r}: give either a command (stdio) or a url (streamable HTTP)")
        return self

    @staticmethod
    def list_from_json(text: str) -> list["McpServerConfig"]:
        """Server configurations from a JSON list (a settings value); empty text means none."""
        return TypeAdapter(list[McpServerConfig]).validate_json(text) if text.strip() else []


class McpUnavailableError(ConnectionError):
    """The MCP server could not be reached or its session could not be opened."""


def _describe(exc: BaseException) -> str:
    """The innermost cause of a failure: anyio reports a refused connection as a group of one."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def _errlog(config: McpServerConfig) -> IO[str]:
    """Where a stdio server's stderr goes: the log file, else our stderr (a real file descriptor is needed)."""
    if config.log_file:
        Path(config.log_file).parent.mkdir(parents=True, exist_ok=True)
        return open(config.log_file, "a", encoding="utf-8")
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.fileno()
                return stream
        except (AttributeError, OSError, ValueError):
            continue
    raise McpUnavailableError("no stderr with a file descriptor for the MCP server's log; set log_file")


class _Session:
    """One open MCP session, held by a task on a private event loop thread."""

    def __init__(self, config: McpServerConfig):
        self.config = config
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"mcp-{config.name}", daemon=True)
        self.thread.start()
        self.client: Any = None
        self.tools: list[Any] = []
        self.error: BaseException | None = None
        self.broken = False  # a request saw the connection closed: reopen on the next call
        self._stop = asyncio.Event()  # bound to the loop on first wait (Python >= 3.10)
        self._log: IO[str] | None = None
        ready: concurrent.futures.Future[list[Any]] = concurrent.futures.Future()
        self.task = asyncio.run_coroutine_threadsafe(self._hold(ready), self.loop)
        try:
            self.tools = ready.result(timeout=config.timeout_seconds)
        except BaseException as exc:
            self.close()
            detail = "timed out" if isinstance(exc, concurrent.futures.TimeoutError) else _describe(exc)
            raise McpUnavailableError(f"MCP server {config.name!r} ({self.target()}): {detail}") from exc

    def target(self) -> str:
        return self.config.url or " ".join(self.config.command)

    def _transport(self) -> Any:
        if self.config.url:
            return self.config.url  # mcp.Client opens a streamable-HTTP transport for a URL
        self._log = _errlog(self.config)
        program, *args = self.config.command
        parameters = StdioServerParameters(
            command=program, args=args, env=self.config.env or None, cwd=self.config.cwd or None
        )
        return stdio_client(parameters, errlog=self._log)

    async def _hold(self, ready: concurrent.futures.Future[list[Any]]) -> None:
        try:
            async with Client(self._transport(), read_timeout_seconds=self.config.timeout_seconds) as client:
                tools: list[Any] = []
                cursor: str | None = None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if not cursor:
                        break
                self.client = client
                ready.set_result(tools)
                await self._stop.wait()
        except BaseException as exc:  # recorded: the next call reconnects, and says why it had to
            self.error = exc
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else McpUnavailableError("cancelled"))
            if not isinstance(exc, Exception):
                raise
        finally:
            self.client = None
            if self._log is not None and self._log not in (sys.stderr, sys.__stderr__):
                self._log.close()

    @property
    def alive(self) -> bool:
        return self.client is not None and not self.broken and not self.task.done()

    def request(self, call: Callable[[Any], Awaitable[T]], timeout: float) -> T:
        client = self.client
        if client is None or self.task.done():
            raise McpUnavailableError(f"the session ended: {self.error!r}")
        future = asyncio.run_coroutine_threadsafe(call(client), self.loop)  # type: ignore[arg-type]
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout:.0f} s") from None
        except MCPError as exc:
            self.broken = self.broken or exc.code == CONNECTION_CLOSED
            raise
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, ConnectionError):
            self.broken = True
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return
        if self.client is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        else:
            self.task.cancel()  # still connecting
        try:
            self.task.result(timeout=_CLOSE_SECONDS)
        except concurrent.futures.TimeoutError:
            self.task.cancel()  # a stdio transport still stops its process on cancellation (shielded)
            try:
                self.task.result(timeout=_CLOSE_SECONDS)
            except BaseException:
                pass
        except BaseException:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=_CLOSE_SECONDS)
        if not self.thread.is_alive():
            self.loop.close()


def _schema_problem(schema: dict[str, Any], arguments: dict[str, Any]) -> str:
    """Why the arguments fail the tool's input schema, or "" (also when the schema itself is unusable)."""
    try:
        validator = jsonschema.validators.validator_for(schema)(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    except (jsonschema.exceptions.SchemaError, TypeError):
        return ""
    if error is None:
        return ""
    where = "/".join(map(str, error.absolute_path))
    return f"{where}: {error.message}" if where else error.message


def _result_text(result: Any) -> str:
    """A tool result as the text the model reads: its structured content, else its text blocks."""
    if result.structured_content is not None and not result.is_error:
        return as_text(json.dumps(result.structured_content, ensure_ascii=False))
    parts = [
        getattr(block, "text", None) or f"[{getattr(block, 'type', 'content')} omitted]" for block in result.content
    ]
    return as_text("\n".join(parts))


class McpToolbox:
    """The tools of one MCP server as a `Toolbox`. Thread-safe; `close()` when done (or use `with`)."""

    def __init__(self, config: McpServerConfig):
        self.config = config
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._tools: dict[str, Any] = {}
        self._closed = False

    def __enter__(self) -> "McpToolbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connected(self) -> _Session:
        with self._lock:
            if self._closed:
                raise McpUnavailableError(f"MCP toolbox {self.config.name!r} is closed")
            if self._session is None or not self._session.alive:
                if self._session is not None:
                    self._session.close()
                    self._session = None
                self._session = _Session(self.config)
                self._tools = {tool.name: tool for tool in self._session.tools}
            return self._session

    def specs(self) -> list[ToolSpec]:
        """The server's tools; raises McpUnavailableError when the server cannot be reached."""
        self._connected()
        return [
            ToolSpec(name=t.name, description=t.description or "", parameters=t.input_schema)
            for t in self._tools.values()
        ]

    def call(self, name: str, arguments: dict[str, Any] | str) -> ToolResult:
        try:
            session = self._connected()
        except McpUnavailableError as exc:
            return ToolResult(ok=False, error_kind="tool_error", content=f"{name} is unavailable: {exc}")
        tool = self._tools.get(name)
        if tool is None:
            return unknown_tool(name, list(self._tools))
        try:
            parsed = parse_arguments(arguments)
        except ValueError as exc:
            return ToolResult(ok=False, error_kind="invalid_arguments", content=f"invalid arguments for {name}: {exc}")
        problem = _schema_problem(tool.input_schema, parsed)
        if problem:
            return ToolResult(
                ok=False, error_kind="invalid_arguments", content=f"invalid arguments for {name}: {problem}"
            )
        timeout = self.config.timeout_seconds
        try:
            result = session.request(
                lambda client: client.call_tool(name, parsed, read_timeout_seconds=timeout), timeout + 5
            )
        except Exception as exc:  # protocol error, timeout, dropped session: the model is told, the run goes on
            detail = exc.message if isinstance(exc, MCPError) else _describe(exc)
            return ToolResult(ok=False, error_kind="tool_error", content=f"{name} failed: {detail}")
        text = _result_text(result)
        if result.is_error:
            kind = "invalid_arguments" if _SDK_VALIDATION_ERROR.match(text) else "tool_error"
            return ToolResult(ok=False, error_kind=kind, content=text)
        return ToolResult(ok=True, content=text)

    def close(self) -> None:
        """End the session (a stdio server's process stops); further calls report the toolbox closed."""
        with self._lock:
            self._closed = True
            session, self._session = self._session, None
        if session is not None:
            session.close()
