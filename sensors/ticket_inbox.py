"""The ticket inbox sensor: ticket files dropped into the ticket folders become partitions and runs.

The same pattern as the documents' inbox sensor (sensors/inbox.py), whose cursor,
comparison and run planning it reuses: the cursor holds the state of every ticket file
it has handed to a run, new tickets found in one tick are registered together (so they
sit next to each other at the end of the partition order) and go to one run of
`triage_job` over that range, and an edited ticket re-runs its own partition.

One difference: a removed ticket file keeps its partition. A ticket that was answered
is history (its reply may already have been sent), so nothing is deleted and nothing
is run; the removal is logged.
"""

from dagster import (
    AddDynamicPartitionsRequest,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assets.components.partitions import TICKETS
from assets.triage.tickets import scan_tickets
from resources.pipeline_config import TriageConfig
from sensors.inbox import InboxCursor, adopt_materialized, folder_changes, partition_run_requests
from sensors.jobs import triage_job


@sensor(
    name="ticket_inbox_sensor",
    jobs=[triage_job],
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.STOPPED,
    description="Registers new ticket files in the bundled and inbox ticket folders as tickets partitions and "
    "runs triage_job once over all of them; re-runs a ticket whose file was edited; keeps (and logs) removed ones.",
)
def ticket_inbox_sensor(context: SensorEvaluationContext, triage: TriageConfig):
    cursor = InboxCursor.read(context.cursor)
    current, changes, unchanged = folder_changes(context, cursor, scan_tickets(triage, cursor.files), "tickets")
    if unchanged is not None:
        return unchanged
    for key in changes.removed:
        context.log.warning(f"Ticket file {key} was removed; its partition and everything triaged for it stay")
    registered = set(context.instance.get_dynamic_partitions(TICKETS.name))
    # An edited file whose partition someone deleted meanwhile is registered again, as a new one.
    orphaned = [k for k in changes.changed if k not in registered]
    changes.changed = [k for k in changes.changed if k in registered]
    changes.new = sorted([*changes.new, *orphaned])
    adopted = adopt_materialized(context.instance, changes, registered, current, asset="support_tickets")
    requests, to_register = partition_run_requests(triage_job.name, changes, current, registered, cursor)
    context.log.info(
        f"{len(changes.new)} new, {len(changes.changed)} changed, {len(changes.removed)} removed tickets, "
        f"{len(adopted)} already triaged; {len(requests)} run requests"
    )
    next_cursor = cursor.after_tick(current, len(requests))
    if not requests:  # only removals, or files already triaged
        return SensorResult(
            skip_reason=SkipReason(
                f"Nothing to triage: {len(changes.removed)} removed, {len(adopted)} already triaged"
            ),
            cursor=next_cursor,
        )
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[AddDynamicPartitionsRequest(TICKETS.name, to_register)] if to_register else [],
        cursor=next_cursor,
    )
