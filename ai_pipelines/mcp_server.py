"""The pipelines' tools as an MCP server: `ai-pipelines mcp` (stdio) or `--transport http`.

Any MCP host (an IDE assistant, another team's agent, our own `McpToolbox`) can then use
the support desk and the digest's document index without importing this code: the
four support-desk tools, a fact check of one claim against the document index, and a
search of that index.

The server is unscoped (it serves whoever runs it; the ticket-scoped guardrail lives in
`SupportDeskResource.toolbox`), so its HTTP transport binds the loopback interface only:
it has no authentication. Everything heavy (Dagster definitions, Chroma, the verifier,
embedding the help centre and the corpus) is built on the first tool call that needs it,
so a host can start the server and list its tools at once.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Literal

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from ai_pipelines.settings import Settings, load_settings

if TYPE_CHECKING:
    from resources.support.support_desk import SupportDeskResource
    from resources.verification.claim_verification import ClaimVerifier

SERVER_NAME = "ai-pipelines"
DEFAULT_PORT = 8765
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class ServerState:
    """What the tools need, each built once on first use (tool calls run in worker threads)."""

    def __init__(self, settings: Settings, support_desk_dir: Path | None = None, use_model: bool = False):
        self.settings = settings
        self.support_desk_dir = support_desk_dir
        self.use_model = use_model
        self._desk_lock = threading.Lock()
        self._verifier_lock = threading.Lock()  # apart: indexing the corpus must not hold up the desk's tools
        self._desk: SupportDeskResource | None = None
        self._verifier: ClaimVerifier | None = None

    def desk(self) -> "SupportDeskResource":
        with self._desk_lock:
            if self._desk is None:
                from ai_pipelines.definitions import build_resources
                from resources.pipeline_config import SUPPORT_DESK_DIR
                from resources.support.support_desk import SupportDeskResource

                resources = build_resources(self.settings)
                configured = resources.get("support_desk")  # the code location's, with the deployment's limits
                if not isinstance(configured, SupportDeskResource):
                    configured = SupportDeskResource(
                        data_dir=str(SUPPORT_DESK_DIR), vector_store=resources["vector_store"]
                    )
                self._desk = SupportDeskResource(
                    data_dir=str(self.support_desk_dir or configured.data_dir),
                    vector_store=configured.vector_store,
                    help_centre_collection=configured.help_centre_collection,
                    refund_window_days=configured.refund_window_days,
                    refund_limit_eur=configured.refund_limit_eur,
                )
            return self._desk

    def verifier(self) -> "ClaimVerifier":
        with self._verifier_lock:
            if self._verifier is None:
                from ai_pipelines.corpus_fact_check import corpus_verifier
                from resources.pipeline_config import SAMPLE_CORPUS_DIR

                corpus = Path(self.settings.corpus_dir or SAMPLE_CORPUS_DIR)
                with contextlib.redirect_stdout(sys.stderr):  # it reports skipped files on stdout: the stdio wire
                    self._verifier = corpus_verifier(self.settings, corpus, use_model=self.use_model)
            return self._verifier


def _answer(work: Callable[[], Any]) -> dict[str, Any]:
    """A tool's result as JSON data; a lookup that cannot be answered (or bad data) is the caller's to read."""
    try:
        result = work()
    except ValueError as exc:  # SupportDeskError, SupportDeskDataError, a bad date or claim
        raise ToolError(str(exc)) from exc
    except FileNotFoundError as exc:
        raise ToolError(str(exc)) from exc
    return result.model_dump(mode="json") if hasattr(result, "model_dump") else result


def build_server(state: ServerState) -> MCPServer:
    server = MCPServer(
        SERVER_NAME,
        instructions="Support-desk tools of Lumen Notes (help centre, customers, orders, refunds) and fact checks "
        "against the digest pipeline's document index.",
        log_level="WARNING",
    )

    @server.tool()
    def search_help_centre(
        query: Annotated[str, Field(min_length=1, description="What the customer needs help with, in a few words.")],
        limit: Annotated[int, Field(ge=1, le=10, description="How many articles to return.")] = 3,
    ) -> dict[str, Any]:
        """Search the Lumen Notes help centre; returns the closest articles (slug, title, excerpt, distance)."""
        return _answer(
            lambda: {"hits": [h.model_dump(mode="json") for h in state.desk().search_help_centre(query, limit)]}
        )

    @server.tool()
    def lookup_customer(
        customer_id: Annotated[str, Field(min_length=1, description="A customer id, e.g. C1001.")],
    ) -> dict[str, Any]:
        """A customer: name, email, plan, country, signup date, and their orders."""

        def account() -> Any:
            from resources.support.support_desk import CustomerAccount

            desk = state.desk()
            customer = desk.customer(customer_id)
            return CustomerAccount(customer=customer, orders=desk.orders_of(customer.customer_id))

        return _answer(account)

    @server.tool()
    def lookup_order(
        order_id: Annotated[str, Field(min_length=1, description="An order id, e.g. O1001.")],
    ) -> dict[str, Any]:
        """One order: customer, date, product, amount paid in EUR and status (paid, refunded, failed)."""
        return _answer(lambda: state.desk().order(order_id))

    @server.tool()
    def compute_refund(
        order_id: Annotated[str, Field(min_length=1, description="The order to refund, e.g. O1001.")],
        as_of: Annotated[
            str, Field(description="The ticket's date (YYYY-MM-DD) the refund window is counted to; default today.")
        ] = "",
        amount_eur: Annotated[
            float | None, Field(gt=0, description="Amount asked for, in EUR; omit for the full amount paid.")
        ] = None,
    ) -> dict[str, Any]:
        """Whether an order can be refunded and how much: paid orders only, within the refund window, never more
        than was paid; above the approval limit it needs a supervisor (requires_approval)."""
        return _answer(lambda: state.desk().quote_refund(order_id, as_of or date.today().isoformat(), amount_eur))

    @server.tool()
    def fact_check(
        claim: Annotated[str, Field(min_length=1, description="One factual statement to check against the documents.")],
    ) -> dict[str, Any]:
        """Verdict on a claim against the digest pipeline's document index: supported, refuted or not_enough_info,
        with a calibrated score, the evidence chunk ids and sentence, and the reason."""

        def verdict() -> dict[str, Any]:
            from resources.verification.claim_verification import Claim

            result = state.verifier().verify([Claim(id="claim", text=claim)])[0]
            return {"claim": claim} | result.model_dump(
                mode="json", include={"verdict", "score", "evidence", "evidence_sentence", "reason", "contested"}
            )

        return _answer(verdict)

    @server.tool()
    def search_documents(
        query: Annotated[str, Field(min_length=1, description="What to look for in the documents.")],
        limit: Annotated[int, Field(ge=1, le=20, description="How many passages to return.")] = 5,
    ) -> dict[str, Any]:
        """The passages of the digest pipeline's documents closest to the query (chunk id, document id, text, distance)."""

        def hits() -> dict[str, Any]:
            verifier = state.verifier()
            found = verifier.vector_store.query(verifier.collection, [query], n_results=limit)[0]
            return {
                "hits": [
                    {
                        "chunk_id": h.id,
                        "doc_id": h.metadata.get("doc_id", ""),
                        "text": h.text,
                        "distance": round(h.distance or 0.0, 4),
                    }
                    for h in found
                ]
            }

        return _answer(hits)

    return server


def serve(
    transport: Literal["stdio", "http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    settings: Settings | None = None,
    support_desk_dir: Path | None = None,
) -> None:
    """Serve until the host disconnects (stdio) or the process is stopped (http, on 127.0.0.1 only)."""
    if transport not in ("stdio", "http"):
        raise ValueError(f"unknown transport {transport!r}: stdio or http")
    if transport == "http" and host not in LOOPBACK_HOSTS:
        raise ValueError(f"the MCP server has no authentication and binds the loopback interface only, not {host!r}")
    server = build_server(ServerState(settings or load_settings(), support_desk_dir))
    if transport == "stdio":
        server.run("stdio")
    else:
        print(f"MCP server {SERVER_NAME} on http://{host}:{port}/mcp", file=sys.stderr, flush=True)
        server.run("streamable-http", host=host, port=port)
