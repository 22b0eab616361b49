"""What each reply is written from: help centre, customer, orders and history, fetched at once.

The four lookups are independent, so they run concurrently per ticket and the slowest
one, not their sum, sets the latency; the metadata shows both. The step's tickets share one
pool of lookup threads (room for every ticket in flight), rather than each ticket starting
and joining four threads of its own. A lookup that fails is recorded as that source's
error and the others still arrive: a reply written without the order table is escalated
later, not lost now. History comes from the customer's
conversation memory, trimmed to the context budget with a running summary (written by
the `fast` tier) of what no longer fits verbatim.
"""

import time
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Callable

import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, Output, asset
from pydantic import BaseModel, Field

from assets.components.asset_spec import PipelineAssetSpec
from assets.components.partitions import TICKETS
from assets.triage.ticket_routes import TicketRoute
from assets.triage.tickets import Ticket
from resources import ModelCallError, ModelResource, ModelSession
from resources.metadata.markdown_tables import markdown_table
from resources.pipeline_config import PipelineConfig, TriageConfig
from resources.support.conversation_memory import ConversationMemory, Recall, Turn
from resources.support.support_desk import SupportDeskResource
from resources.support.triage_prompts import MAX_TOKENS, SUMMARIZE_HISTORY, user
from resources.tables import from_frame, to_frame

GROUP = "triage_routing"
CODE_VERSION = f"1-{SUMMARIZE_HISTORY.version}"
MEMORY_STORE = "support_memory"
LOOKUPS = 4  # help centre, customer, orders, history: one thread each while a ticket is gathered


class HistorySummary(BaseModel):
    summary: str = Field(max_length=800)


class TicketContext(BaseModel):
    ticket: str
    ticket_id: str = ""
    customer_id: str = ""
    customer: dict[str, Any] = {}
    orders: list[dict[str, Any]] = []
    help_centre: list[dict[str, Any]] = Field(
        default=[], description="Nearest help-centre articles, each with its closest paragraph."
    )
    known_issues: list[dict[str, Any]] = []
    history: str = Field(
        default="", description="The window of recent turns and the running summary the reply is written with."
    )
    history_turns: int = 0
    summarized_turns: int = 0
    dropped_turns: int = 0
    source_errors: dict[str, str] = {}
    source_seconds: dict[str, float] = {}
    wall_seconds: float = 0.0


def memory_for(pipeline: PipelineConfig) -> ConversationMemory:
    return ConversationMemory(pipeline.state_location(MEMORY_STORE))


def history_summarizer(llm: ModelSession, partition: str) -> Callable[[str, list[Turn]], str | None]:
    def summarize(previous: str, turns: list[Turn]) -> str | None:
        prompt = SUMMARIZE_HISTORY.render(previous=previous or "(none)", turns="\n".join(t.line for t in turns))
        try:
            return llm.structured(
                user(prompt), HistorySummary, tier="fast", max_tokens=MAX_TOKENS["history"], partition=partition
            ).summary
        except ModelCallError:
            return None

    return summarize


def help_centre_query(ticket: Ticket) -> str:
    return f"{ticket.subject}. {ticket.body[:500]}"


def gather(
    ticket: Ticket,
    route: TicketRoute | None,
    support_desk: SupportDeskResource,
    memory: ConversationMemory,
    triage: TriageConfig,
    llm: ModelSession,
    help_centre: Callable[[], list[dict[str, Any]]] | None = None,
    lookups_pool: Executor | None = None,
) -> TicketContext:
    """The four lookups of one ticket, concurrently; each one's failure is its own.
    `help_centre` gives this ticket's share of a search made for many tickets at once;
    `lookups_pool` runs the lookups (threads of its own when not given). It must not be
    the pool this call runs on, or a full pool would wait on itself."""
    lookups: dict[str, Callable[[], Any]] = {
        "help_centre": help_centre
        or (lambda: [h.model_dump() for h in support_desk.search_help_centre(help_centre_query(ticket), limit=3)]),
        "customer": lambda: support_desk.customer(ticket.customer_id).model_dump(mode="json"),
        "orders": lambda: [o.model_dump(mode="json") for o in support_desk.orders_of(ticket.customer_id)],
        "history": lambda: memory.recall(
            ticket.customer_id,
            triage.memory_budget_chars,
            triage.memory_window_turns,
            history_summarizer(llm, ticket.ticket),
            exclude_ticket=ticket.ticket,
        ),
    }
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}

    def timed(name: str) -> None:
        started = time.perf_counter()
        try:
            results[name] = lookups[name]()
        except Exception as exc:  # one source's failure never loses the others
            errors[name] = f"{type(exc).__name__}: {exc}"[:300]
        seconds[name] = round(time.perf_counter() - started, 4)

    started = time.perf_counter()
    if lookups_pool is not None:
        list(lookups_pool.map(timed, lookups))
    else:
        with ThreadPoolExecutor(max_workers=len(lookups)) as pool:
            list(pool.map(timed, lookups))
    recall: Recall = results.get("history") or Recall()
    issues = (
        [i.model_dump() for i in support_desk.known_issues()]
        if route is not None and route.intent in ("bug", "multi_part")
        else []
    )
    return TicketContext(
        ticket=ticket.ticket,
        ticket_id=ticket.ticket_id,
        customer_id=ticket.customer_id,
        customer=results.get("customer", {}),
        orders=results.get("orders", []),
        help_centre=results.get("help_centre", []),
        known_issues=issues,
        history=recall.text(),
        history_turns=recall.total_turns,
        summarized_turns=recall.summarized_turns,
        dropped_turns=recall.dropped_turns,
        source_errors=errors,
        source_seconds=seconds,
        wall_seconds=round(time.perf_counter() - started, 4),
    )


@asset(**PipelineAssetSpec(group="triage_intake", code_version="1", kinds={"chroma"}).asset_keywords())
def help_centre_index(support_desk: SupportDeskResource) -> Output[dict]:
    """The help-centre articles in Chroma, paragraph by paragraph, for the reply agent's search."""
    version = support_desk.index_help_centre()
    articles = support_desk.articles()
    return Output(
        {"version": version, "articles": len(articles)},
        metadata={
            "index_version": version,
            "articles": len(articles),
            "collection": support_desk.collection_name(),
            "titles": MetadataValue.md("\n".join(f"- {a.slug}: {a.title}" for a in articles)),
        },
    )


@asset(
    **PipelineAssetSpec(
        group=GROUP,
        code_version=CODE_VERSION,
        rows=TicketContext,
        partitions=TICKETS,
        kinds={"chroma"},
        calls_model=True,
        deps=[help_centre_index],
    ).asset_keywords()
)
def ticket_context(
    context: AssetExecutionContext,
    model: ModelResource,
    support_desk: SupportDeskResource,
    pipeline: PipelineConfig,
    triage: TriageConfig,
    support_tickets: pd.DataFrame,
    ticket_routes: pd.DataFrame,
) -> Output[pd.DataFrame]:
    """Per ticket: help-centre excerpts, the customer, their orders and their history, gathered concurrently."""
    memory = memory_for(pipeline)
    routes = {r.ticket: r for r in from_frame(ticket_routes, TicketRoute)}
    tickets = [t for t in from_frame(support_tickets, Ticket) if t.status == "received"]
    workers = max(1, model.max_concurrency)
    with (
        model.session(context) as llm,
        ThreadPoolExecutor(max_workers=1) as searcher,
        ThreadPoolExecutor(max_workers=workers) as pool,
        ThreadPoolExecutor(max_workers=LOOKUPS * workers) as lookup_pool,
    ):
        # One help-centre search for every ticket (one embedding request, one Chroma query), beside the
        # per-ticket lookups; each ticket takes its share when its other lookups are under way.
        searched = searcher.submit(support_desk.search_help_centre_many, [help_centre_query(t) for t in tickets], 3)

        def share(index: int) -> Callable[[], list[dict[str, Any]]]:
            return lambda: [h.model_dump() for h in searched.result()[index]]

        rows = list(
            pool.map(
                lambda item: gather(
                    item[1], routes.get(item[1].ticket), support_desk, memory, triage, llm, share(item[0]), lookup_pool
                ),
                enumerate(tickets),
            )
        )
    sequential = sum(sum(r.source_seconds.values()) for r in rows)
    wall = sum(r.wall_seconds for r in rows)
    return Output(
        to_frame(rows, TicketContext),
        metadata={
            "tickets": len(rows),
            "source_errors": sum(len(r.source_errors) for r in rows),
            "lookup_seconds_sum": round(sequential, 3),
            "lookup_seconds_wall": round(wall, 3),
            "concurrency_gain": round(sequential / wall, 2) if wall else None,
            "history_summarized_turns": sum(r.summarized_turns for r in rows),
            "history_dropped_turns": sum(r.dropped_turns for r in rows),
            "preview": MetadataValue.md(
                markdown_table(
                    [
                        {
                            "ticket": r.ticket,
                            "articles": ", ".join(h["slug"] for h in r.help_centre),
                            "orders": len(r.orders),
                            "history_turns": r.history_turns,
                            "summarized": r.summarized_turns,
                            "errors": "; ".join(r.source_errors.values())[:100],
                        }
                        for r in rows[:20]
                    ]
                )
            ),
        },
    )
