"""`ai-pipelines triage`: every ticket file as a partition, then one run of the triage job
over the tickets that still need it, executed in this process.

The same shape as `ai-pipelines run` (backfill.py): the same Dagster instance
(DAGSTER_HOME), one run over a partition range, tagged with this process so that a
later process can tell when it was killed (run_recovery). Registering never removes a
partition: a ticket whose file is gone was answered already, and its history stays.

A ticket needs a run when `support_tickets` was never materialized for it, or was
materialized from other content than its file holds now (an edited ticket); `--all`
re-runs every ticket that has a file. New tickets are registered together at the end of
the partition order, so they form a range of their own; when the tickets to run are not
next to each other (an edited old ticket and new ones), the one range covers the
tickets between them too, and the plan says how many.
"""

from __future__ import annotations

from dagster import AssetKey, DagsterInstance, Definitions, ExecuteInProcessResult
from pydantic import BaseModel

from ai_pipelines.run_plan import latest_materializations
from ai_pipelines.run_process import RunProcess
from assets.components.partitions import TICKETS, range_tags
from assets.triage.tickets import CONTENT_HASH, scan_tickets
from resources.documents.files import FileState, is_valid_key
from resources.pipeline_config import TriageConfig

INTAKE_ASSET = "support_tickets"


class NoTicketsError(RuntimeError):
    pass


class RegisteredTickets(BaseModel):
    files: dict[str, FileState]  # every ticket file now, by partition key
    added: list[str]
    skipped: list[str]  # files whose names cannot be partition keys


def register_tickets(instance: DagsterInstance, triage: TriageConfig) -> RegisteredTickets:
    """Register every ticket file of both folders as a tickets partition (new ones together, in
    key order, at the end of the partition order). Nothing is removed."""
    found = scan_tickets(triage)
    keys = sorted(k for k in found if is_valid_key(k))
    registered = set(instance.get_dynamic_partitions(TICKETS.name))
    added = [k for k in keys if k not in registered]
    if added:
        instance.add_dynamic_partitions(TICKETS.name, added)
    return RegisteredTickets(files={k: found[k] for k in keys}, added=added, skipped=sorted(set(found) - set(keys)))


class TriagePlan(BaseModel):
    tickets: list[str]  # the tickets that need a run, in partition order
    covered: list[str]  # the partition range the run covers, in partition order
    reason: str

    @property
    def up_to_date(self) -> bool:
        return not self.tickets

    def run_tags(self) -> dict[str, str]:
        return range_tags(self.covered)


def _expected_hash(state: FileState) -> str:
    """What `support_tickets` records as content_hash for a file in this state."""
    return "" if state.sha256.startswith("special:") else state.sha256[:16]


def plan_triage(instance: DagsterInstance, files: dict[str, FileState], everything: bool = False) -> TriagePlan:
    order = instance.get_dynamic_partitions(TICKETS.name)
    with_files = [k for k in order if k in files]
    if everything:
        todo, why = with_files, "as asked"
    else:
        latest = {
            k: str(v.recorded or "")
            for k, v in latest_materializations(instance, INTAKE_ASSET, set(with_files), recorded=CONTENT_HASH).items()
        }
        todo = [k for k in with_files if k not in latest or latest[k] != _expected_hash(files[k])]
        new = sum(k not in latest for k in todo)
        why = f"{new} new, {len(todo) - new} edited"
    if not todo:
        return TriagePlan(tickets=[], covered=[], reason=f"all {len(with_files)} tickets are triaged")
    position = {k: i for i, k in enumerate(order)}
    covered = order[position[todo[0]] : position[todo[-1]] + 1]
    extra = len(covered) - len(todo)
    gone = sum(k not in files for k in covered)
    reason = (
        f"{len(todo)} of {len(with_files)} tickets ({why})"
        + (f"; the run's partition range also covers {extra} tickets between them" if extra else "")
        + (f", {gone} of them with their file removed (recorded as quarantined: file no longer exists)" if gone else "")
    )
    return TriagePlan(tickets=todo, covered=covered, reason=reason)


def run_triage(
    defs: Definitions, instance: DagsterInstance, triage: TriageConfig, everything: bool = False, **execute_kwargs
) -> tuple[TriagePlan, ExecuteInProcessResult | None]:
    """Register the ticket files and execute `triage_job` in this process over the tickets
    that need it (every ticket with a file when `everything`): one run, or none."""
    registered = register_tickets(instance, triage)
    if not registered.files:
        folders = " or ".join(str(p) for p in triage.ticket_folders().values())
        raise NoTicketsError(f"no tickets to triage: no files in {folders}")
    plan = plan_triage(instance, registered.files, everything)
    if plan.up_to_date:
        return plan, None
    tags = {**execute_kwargs.pop("tags", {}), **RunProcess.current().tags()}
    job = defs.resolve_job_def("triage_job")
    if len(plan.covered) == 1:
        return plan, job.execute_in_process(
            instance=instance, partition_key=plan.covered[0], tags=tags, **execute_kwargs
        )
    return plan, job.execute_in_process(instance=instance, tags={**tags, **plan.run_tags()}, **execute_kwargs)


class TriageReport(BaseModel):
    run_id: str
    success: bool
    received: int
    quarantined: list[tuple[str, str]]  # (ticket, reason)
    blocked_by: list[tuple[str, str]]  # (check, description)
    failed_steps: list[str]
    routing_mix: dict[str, int] = {}
    replies: dict[str, int] = {}  # sent_replies states: sent, awaiting_approval, not_deliverable, ...
    routing_accuracy: dict = {}  # ticket_routes' routing_accuracy: against the desk's labels, and per tier

    @property
    def ok(self) -> bool:
        return self.success and not self.blocked_by

    @classmethod
    def from_result(cls, result: ExecuteInProcessResult) -> "TriageReport":
        received, quarantined, routing_accuracy = 0, [], {}
        outcomes: dict[str, dict[str, int]] = {"ticket_routes": {}, "sent_replies": {}}
        for event in result.get_asset_materialization_events():
            materialization = event.materialization
            key = materialization.asset_key.to_user_string()
            if key in outcomes and not outcomes[key]:  # one materialization per ticket, each with the run's totals
                values = {k: v.value for k, v in materialization.metadata.items()}
                outcomes[key] = dict(values.get("routing_mix" if key == "ticket_routes" else "states") or {})
                if key == "ticket_routes":
                    routing_accuracy = dict(values.get("routing_accuracy") or {})
            if materialization.asset_key != AssetKey(INTAKE_ASSET):
                continue
            metadata = {k: v.value for k, v in materialization.metadata.items()}
            if metadata.get("quarantined"):
                quarantined.append((materialization.partition or "", str(metadata.get("quarantine_reason", ""))))
            else:
                received += int(metadata.get("received", 0) or 0)
        blocked = [
            (e.check_name, e.description or "")
            for e in result.get_asset_check_evaluations()
            if not e.passed and e.blocking
        ]
        return cls(
            run_id=result.run_id,
            success=result.success,
            received=received,
            quarantined=sorted(quarantined),
            blocked_by=blocked,
            failed_steps=[e.step_key for e in result.get_step_failure_events() if e.step_key],
            routing_mix=outcomes["ticket_routes"],
            routing_accuracy=routing_accuracy,
            replies=outcomes["sent_replies"],
        )

    def render(self) -> str:
        lines = [
            f"Run {self.run_id}: {'succeeded' if self.ok else 'FAILED'}",
            f"Tickets processed: {self.received + len(self.quarantined)} "
            f"({self.received} received, {len(self.quarantined)} quarantined)",
        ]
        lines += [f"  quarantined {ticket}: {reason}" for ticket, reason in self.quarantined[:20]]
        if len(self.quarantined) > 20:
            lines.append(f"  ... and {len(self.quarantined) - 20} more (see the support_tickets table)")
        if self.routing_mix:
            lines.append("Routes: " + ", ".join(f"{k} {v}" for k, v in sorted(self.routing_mix.items())))
        lines += routing_accuracy_lines(self.routing_accuracy)
        if self.replies:
            waiting = self.replies.get("awaiting_approval", 0)
            lines.append(
                "Replies: " + ", ".join(f"{k} {v}" for k, v in sorted(self.replies.items())) + " (table sent_replies)"
            )
            if waiting:
                lines.append(
                    f"{waiting} replies wait for a person: launch reply_approval_job with a decision (README, Support triage)"
                )
            if self.replies.get("not_deliverable"):
                lines.append(
                    "Not deliverable: escalated to a person, blocked by a guardrail or abusive; "
                    "the reason is on each row of reply_checks"
                )
        lines += [f"BLOCKED: check '{check}' failed: {description}" for check, description in self.blocked_by]
        if self.failed_steps:
            lines.append(f"Failed steps: {', '.join(self.failed_steps)} (see the run's logs in the Dagster UI)")
        return "\n".join(lines)


def routing_accuracy_lines(accuracy: dict) -> list[str]:
    """The routes against the desk's labels, then each routing tier's measured accuracy (desk / public set)."""
    lines = []
    desk = accuracy.get("against_desk_labels") or {}
    if desk.get("labelled"):
        lines.append(
            f"Routing against the desk's labels: {desk['right']} of {desk['labelled']} right "
            f"({desk['accuracy']:.0%}), {desk['to_person']} handed to a person"
        )
    floor = accuracy.get("floor")

    def share(value: object) -> str:
        return f"{value:.0%}" if isinstance(value, (int, float)) else "n/a"

    for tier, figures in (accuracy.get("tiers") or {}).items():
        trust = "trusted" if figures.get("trusted") else f"NOT trusted (under {share(floor)})"
        lines.append(
            f"  tier {tier}: {share(figures.get('desk'))} on the desk's labels, {share(figures.get('public'))} on the "
            f"public intent set ({figures.get('routed')} of {figures.get('items')} routed): {trust}"
        )
    return lines
