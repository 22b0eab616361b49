"""Reply drafts: each route's own way of answering, then refinement against the rubric.

billing and account go to the reply agent, which looks facts up with tools (the
customer, their orders, the refund the policy allows, the help centre) under hard
caps; bug goes to a `strong`-tier answer over the help centre and the known issues;
how_to to a `fast`-tier answer over the help centre; multi_part to orchestrator-worker;
abusive gets no reply and a flag. Every draft is then refined against the rubric.

Nothing here is lost or sent half-done: a ticket whose route needs a person, whose
agent hit a cap, whose model calls failed or whose draft never passed the rubric is
`escalated` with the reason, for a person to answer.
"""

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, Output, asset
from pydantic import BaseModel, Field

from assets.components.asset_spec import PipelineAssetSpec
from assets.components.partitions import TICKETS
from assets.triage.ticket_context import TicketContext
from assets.triage.ticket_routes import TicketRoute
from assets.triage.tickets import Ticket
from resources import ModelCallError, ModelResource, ModelSession
from resources.guardrails.prompt_injection import data_block
from resources.metadata.markdown_tables import markdown_table
from resources.pipeline_config import TriageConfig
from resources.support.agent import AgentLimits, AgentRun, run_agent
from resources.support.mcp_tools import McpServerConfig, McpToolbox
from resources.support.multi_part import answer_in_parts
from resources.support.reply_judge import MIN_JUDGE_ACCURACY, calibrate_reply_judge, reply_examples
from resources.support.reply_refinement import RefinementRound, TicketReply, refine
from resources.support.support_desk import SupportDeskResource
from resources.support.tools import CombinedToolbox, Toolbox
from resources.support.triage_prompts import (
    AGENT,
    ANSWER,
    ANSWER_PART,
    CRITIQUE,
    MAX_TOKENS,
    MERGE,
    PLAN,
    REVISE,
    ticket_block,
    user,
    versions,
)
from resources.tables import from_frame, to_frame
from resources.verification.judge_calibration import UNJUDGED, JudgeCalibration, calibration_usage, examples_hash

GROUP = "triage_replies"
CODE_VERSION = (
    f"1-{versions(AGENT, ANSWER, PLAN, ANSWER_PART, MERGE, CRITIQUE, REVISE)}-{examples_hash(reply_examples())[:8]}"
)
Handling = Literal["agent", "kb_answer", "fast_answer", "orchestrator_worker", "no_reply", "person"]
HANDLING: dict[str, Handling] = {
    "billing": "agent",
    "account": "agent",
    "bug": "kb_answer",
    "how_to": "fast_answer",
    "multi_part": "orchestrator_worker",
    "abusive": "no_reply",
}


# Which branches to start first in a step: those with the longest chains of dependent calls (the
# agent's turns then the critique; a plan, its workers, the merge, then the critique) before
# single answers, and branches that call no model last.
CHAIN_ORDER: dict[Handling, int] = {"agent": 0, "orchestrator_worker": 1, "kb_answer": 2, "fast_answer": 3}


def handling_of(route: TicketRoute) -> Handling:
    """The branch that answers a route (as `Drafter.draft` decides it)."""
    if route.needs_person:
        return "person"
    return HANDLING.get(route.intent, "person")


class ReplyDraft(BaseModel):
    ticket: str
    ticket_id: str = ""
    customer_id: str = ""
    intent: str = ""
    handling: str = Field(
        default="", description="agent, kb_answer, fast_answer, orchestrator_worker, no_reply or person."
    )
    status: Literal["drafted", "escalated", "no_reply"]
    reason: str = Field(default="", description="Why a person takes over, or why there is no reply.")
    reply: str = ""
    agent_status: str = ""
    agent_iterations: int = 0
    agent_tool_calls: int = 0
    agent_tool_errors: int = 0
    agent_tokens: int = 0
    agent_steps: list[dict[str, Any]] = []
    workers: int = 0
    sub_questions: list[str] = []
    refinement_rounds: list[RefinementRound] = []
    rubric_passed: bool = False
    rubric_verdict: Literal["passed", "failed", "unjudged", ""] = Field(
        default="",
        description="The rubric judge's verdict; unjudged: the judge scored under its floor on the labelled "
        "replies, so its pass counts for nothing and a person answers.",
    )


def context_block(ctx: TicketContext) -> str:
    lines = [f"[{h['slug']}] {h['title']}: {h['excerpt']}" for h in ctx.help_centre]
    lines += [
        f"Known issue {i['issue_id']} ({i['status']}): {i['title']}. Workaround: {i['workaround']}"
        for i in ctx.known_issues
    ]
    if ctx.customer:
        lines.append(
            f"Customer {ctx.customer.get('customer_id')}: {ctx.customer.get('name')}, plan {ctx.customer.get('plan')}"
        )
    lines += [
        f"Order {o['order_id']} on {o['order_date']}: {o['product']}, {o['amount_eur']:.2f} EUR, {o['status']}"
        for o in ctx.orders
    ]
    return data_block("context", "\n".join(lines) or "(nothing found)")


def history_block(ctx: TicketContext) -> str:
    return data_block("history", ctx.history or "(no earlier conversation)")


def agent_limits(triage: TriageConfig) -> AgentLimits:
    return AgentLimits(
        max_iterations=triage.agent_max_iterations,
        max_tool_calls=triage.agent_max_tool_calls,
        max_tokens=triage.agent_max_tokens,
        max_seconds=triage.agent_max_seconds,
    )


def agent_fields(run: AgentRun) -> dict[str, Any]:
    return {
        "agent_status": run.status,
        "agent_iterations": run.iterations,
        "agent_tool_calls": run.tool_calls,
        "agent_tool_errors": run.tool_errors,
        "agent_tokens": run.tokens,
        "agent_steps": [s.model_dump() for s in run.steps],
    }


class Drafter:
    """Drafts one ticket's reply by its route; shared by the tickets of one step."""

    def __init__(
        self,
        llm: ModelSession,
        support_desk: SupportDeskResource,
        triage: TriageConfig,
        extra_tools: list[Toolbox] | None = None,
    ):
        self.llm, self.support_desk, self.triage = llm, support_desk, triage
        self.extra_tools = extra_tools or []
        self.judge: JudgeCalibration | None = None  # set by the asset before drafting; None: never measured

    @property
    def judge_proven(self) -> bool:
        return self.judge is not None and self.judge.proven(MIN_JUDGE_ACCURACY)

    def draft(self, ticket: Ticket, route: TicketRoute, ctx: TicketContext) -> ReplyDraft:
        base = ReplyDraft(
            ticket=ticket.ticket,
            ticket_id=ticket.ticket_id,
            customer_id=ticket.customer_id,
            intent=route.intent,
            status="escalated",
        )
        if route.needs_person:
            return base.model_copy(update={"handling": "person", "reason": f"routing unsure: {route.reason}"})
        handling = HANDLING.get(route.intent)
        if handling is None:
            return base.model_copy(update={"handling": "person", "reason": f"no branch for intent {route.intent!r}"})
        if handling == "no_reply":
            return base.model_copy(
                update={
                    "handling": handling,
                    "status": "no_reply",
                    "reason": f"abusive: flagged for a person, no reply sent ({route.reason})"[:300],
                }
            )
        block = ticket_block(ticket.subject, ticket.body)
        # The agent, the workers and the refinement ask in the step's session, for this ticket.
        ask = dict(llm=self.llm, partition=ticket.ticket)
        update: dict[str, Any] = {"handling": handling}
        try:
            if handling == "agent":
                prompt = (
                    AGENT.render(
                        refund_limit=f"{self.triage.refund_limit_eur:g}",
                        customer_id=ticket.customer_id,
                        ticket_date=ticket.received_at[:10],
                        history=history_block(ctx),
                        ticket=block,
                    )
                    + "\n\n"
                    + context_block(ctx)
                )
                tools: Toolbox = self.support_desk.toolbox(
                    customer_id=ticket.customer_id, as_of=ticket.received_at[:10]
                )
                if self.extra_tools:
                    tools = CombinedToolbox([tools, *self.extra_tools])
                run = run_agent(
                    self.llm,
                    user(prompt),
                    tools,
                    agent_limits(self.triage),
                    tier="strong",
                    max_tokens=MAX_TOKENS["agent_turn"],
                    partition=ticket.ticket,
                )
                update.update(agent_fields(run))
                if run.status != "answered":
                    return base.model_copy(update={**update, "reason": f"agent {run.status}: {run.reason}"})
                reply = run.answer
            elif handling == "orchestrator_worker":
                parts = answer_in_parts(
                    block, max_workers=self.triage.max_workers, support_desk=self.support_desk, **ask
                )
                update.update(workers=len(parts.workers), sub_questions=parts.questions)
                if parts.error:
                    return base.model_copy(update={**update, "reason": parts.error})
                reply = parts.reply
            else:
                tier = "strong" if handling == "kb_answer" else "fast"
                answer = self.llm.structured(
                    user(ANSWER.render(history=history_block(ctx), context=context_block(ctx), ticket=block)),
                    TicketReply,
                    tier=tier,
                    max_tokens=MAX_TOKENS["reply"],
                    partition=ticket.ticket,
                )
                reply = answer.reply.strip()
        except ModelCallError as exc:
            return base.model_copy(update={**update, "reason": f"model calls failed: {exc}"[:400]})
        if not self.judge_proven:
            # Neither critiqued nor revised on an unproven judge's word: the draft waits for a person.
            why = self.judge.unproven_reason(MIN_JUDGE_ACCURACY) if self.judge else "the reply judge was not measured"
            return base.model_copy(
                update={**update, "reply": reply, "rubric_verdict": UNJUDGED, "reason": f"rubric {UNJUDGED}: {why}"}
            )
        final, rounds, passed = refine(
            reply,
            ticket_block=block,
            context_block=context_block(ctx),
            known_slugs=[h["slug"] for h in ctx.help_centre],
            refund_limit=self.triage.refund_limit_eur,
            max_rounds=self.triage.max_refinement_rounds,
            **ask,
        )
        update.update(
            reply=final, refinement_rounds=rounds, rubric_passed=passed, rubric_verdict="passed" if passed else "failed"
        )
        if not passed:
            failed = ", ".join(rounds[-1].failed) if rounds else "no critique"
            return base.model_copy(
                update={**update, "reason": f"rubric not passed after {len(rounds)} rounds: {failed}"}
            )
        return base.model_copy(update={**update, "status": "drafted"})


@asset(
    **PipelineAssetSpec(
        group=GROUP,
        code_version=CODE_VERSION,
        rows=ReplyDraft,
        partitions=TICKETS,
        kinds={"openai"},
        calls_model=True,
    ).asset_keywords()
)
def reply_drafts(
    context: AssetExecutionContext,
    model: ModelResource,
    support_desk: SupportDeskResource,
    triage: TriageConfig,
    support_tickets: pd.DataFrame,
    ticket_routes: pd.DataFrame,
    ticket_context: pd.DataFrame,
) -> Output[pd.DataFrame]:
    """Each ticket's reply, written by its route's branch and refined against the rubric, or escalated with the reason."""
    routes = {r.ticket: r for r in from_frame(ticket_routes, TicketRoute)}
    contexts = {c.ticket: c for c in from_frame(ticket_context, TicketContext)}
    tickets = [t for t in from_frame(support_tickets, Ticket) if t.status == "received" and t.ticket in routes]
    servers = mcp_toolboxes(context, triage)
    # compare_tiers: what routing by tier saved against sending every call to the strong tier.
    with model.session(context, compare_tiers=True) as llm:
        drafter = Drafter(llm, support_desk, triage, servers)
        # Before any draft is critiqued, its judge scores the labelled replies (cached per judge).
        calibration = llm.beside("judge_calibration")
        judge = calibrate_reply_judge(calibration)
        drafter.judge = judge
        if not drafter.judge_proven:
            context.log.warning(f"Replies wait for a person: {judge.unproven_reason(MIN_JUDGE_ACCURACY)}")

        def one(ticket: Ticket) -> ReplyDraft:
            ctx = contexts.get(ticket.ticket) or TicketContext(ticket=ticket.ticket)
            return drafter.draft(ticket, routes[ticket.ticket], ctx)

        # The longest chains of calls start first, so the step does not end waiting on an agent
        # begun last; the rows keep the tickets' order. The help centre was indexed before this
        # step (`help_centre_index` precedes it), so one search per distinct question suffices.
        started = sorted(tickets, key=lambda t: CHAIN_ORDER.get(handling_of(routes[t.ticket]), len(CHAIN_ORDER)))
        try:
            with (
                support_desk.memoized_searches(),
                ThreadPoolExecutor(max_workers=max(1, model.max_concurrency)) as pool,
            ):
                drafted = dict(zip((t.ticket for t in started), pool.map(one, started)))
        finally:
            for server in servers:
                server.close()
        rows = [drafted[t.ticket] for t in tickets]
    return Output(
        to_frame(rows, ReplyDraft),
        metadata={
            **drafts_metadata(rows),
            **judge.metadata(MIN_JUDGE_ACCURACY),
            "judge_proven": drafter.judge_proven,
            **calibration_usage(calibration.ledger),
            "rubric_unjudged": sum(r.rubric_verdict == UNJUDGED for r in rows),
        },
    )


def mcp_toolboxes(context: AssetExecutionContext, triage: TriageConfig) -> list[McpToolbox]:
    """The configured MCP servers that answer; one that does not is logged and left out, never fatal."""
    servers = []
    for config in McpServerConfig.list_from_json(triage.agent_mcp_servers_json):
        toolbox = McpToolbox(config)
        try:
            names = [spec.name for spec in toolbox.specs()]
        except Exception as exc:
            context.log.warning(f"MCP server {config.name} left out: {type(exc).__name__}: {exc}")
            toolbox.close()
            continue
        context.log.info(f"MCP server {config.name}: tools {', '.join(names)}")
        servers.append(toolbox)
    return servers


def drafts_metadata(rows: list[ReplyDraft]) -> dict[str, object]:
    return {
        "tickets": len(rows),
        "statuses": MetadataValue.json(dict(Counter(r.status for r in rows))),
        "handling": MetadataValue.json(dict(Counter(r.handling for r in rows))),
        "escalations": sum(r.status == "escalated" for r in rows),
        "agent_runs": sum(r.handling == "agent" for r in rows),
        "agent_steps": sum(len(r.agent_steps) for r in rows),
        "tool_calls": sum(r.agent_tool_calls for r in rows),
        "tool_errors": sum(r.agent_tool_errors for r in rows),
        "refinement_rounds": sum(len(r.refinement_rounds) for r in rows),
        "per_ticket": MetadataValue.md(
            markdown_table(
                [
                    {
                        "ticket": r.ticket,
                        "intent": r.intent,
                        "handling": r.handling,
                        "status": r.status,
                        "agent_steps": len(r.agent_steps),
                        "tool_calls": r.agent_tool_calls,
                        "rounds": len(r.refinement_rounds),
                        "reason": r.reason[:120],
                    }
                    for r in rows[:40]
                ]
            )
        ),
    }
