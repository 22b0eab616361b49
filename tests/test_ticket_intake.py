"""Ticket intake: `support_tickets` over good and hostile ticket files, the ticket inbox
sensor against a real instance, and `ai-pipelines triage` (function and command)."""

import json
import os
from pathlib import Path

import duckdb
import pytest
from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    DagsterInstance,
    Definitions,
    SensorResult,
    build_sensor_context,
    materialize,
)
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ai_pipelines.triage_run import TriageReport, register_tickets, run_triage
from assets.components.partitions import TICKETS
from assets.triage.tickets import Ticket, TicketFile, read_tickets, support_tickets, tickets_mostly_readable
from resources import WarehouseIOManager
from resources.pipeline_config import TriageConfig
from resources.tables import from_frame
from sensors.jobs import triage_job
from sensors.ticket_inbox import ticket_inbox_sensor

# Tiers, marked per test: the ticket file format is unit; the rest materializes or runs the command, integration.

PASSWD = Path("/etc/passwd")


def ticket(ticket_id: str, customer_id: str = "C001", **fields) -> dict:
    return {
        "ticket_id": ticket_id,
        "customer_id": customer_id,
        "subject": f"Question {ticket_id}",
        "body": f"Hello, my order for {ticket_id} has not arrived.",
        "received_at": "2026-11-27T09:14:00Z",
        **fields,
    }


def write(path: Path, content: dict | str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, dict):
        content = json.dumps(content)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


class Desk:
    """Two ticket folders, a warehouse and an instance: what every test here needs."""

    def __init__(self, root: Path, max_ticket_bytes: int = 30_000):
        self.samples, self.inbox = root / "tickets", root / "ticket_inbox"
        self.samples.mkdir()
        self.inbox.mkdir()
        self.triage = TriageConfig(
            tickets_dir=str(self.samples), ticket_inbox_dir=str(self.inbox), max_ticket_bytes=max_ticket_bytes
        )
        self.warehouse = root / "warehouse.duckdb"
        self.resources = {
            "triage": self.triage,
            "warehouse_io_manager": WarehouseIOManager(database=str(self.warehouse), schema="ai_pipelines"),
        }
        self.instance = DagsterInstance.ephemeral()
        self.defs = Definitions(
            assets=[support_tickets],
            asset_checks=[tickets_mostly_readable],
            jobs=[triage_job],
            resources=self.resources,
        )

    def materialize(self, keys: list[str]):
        self.instance.add_dynamic_partitions(
            TICKETS.name, [k for k in keys if not self.instance.has_dynamic_partition(TICKETS.name, k)]
        )
        return materialize(
            [support_tickets, tickets_mostly_readable],
            instance=self.instance,
            resources=self.resources,
            tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
            raise_on_error=False,
        )

    def table(self) -> list[Ticket]:
        with duckdb.connect(str(self.warehouse), read_only=True) as connection:
            frame = connection.execute("select * from ai_pipelines.support_tickets order by ticket").df()
        return from_frame(frame, Ticket)


@pytest.fixture
def desk(tmp_path) -> Desk:
    return Desk(tmp_path)


def check_evaluation(result):
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


@pytest.mark.integration
def test_bad_tickets_are_quarantined_with_their_reason_and_never_stop_the_good_ones(desk):
    write(desk.samples / "T001.json", ticket("T001", received_at="2026-11-27T10:14:00+01:00"))
    write(desk.samples / "T002.json", ticket("T002", "C002"))
    write(desk.samples / "T009.json", ticket("T001", "C009"))  # a ticket id already received in this run
    write(desk.inbox / "malformed.json", '{"ticket_id": "T010", "customer_id": ')
    write(desk.inbox / "no-customer.json", {k: v for k, v in ticket("T011").items() if k != "customer_id"})
    write(desk.inbox / "empty-id.json", ticket("  "))
    write(desk.inbox / "bad-time.json", ticket("T012", received_at="yesterday"))
    write(desk.inbox / "naive-time.json", ticket("T013", received_at="2026-11-27T09:14:00"))
    write(desk.inbox / "long-body.json", ticket("T014", body="x" * 20_001))
    write(
        desk.inbox / "latin1.json",
        json.dumps(ticket("T015", subject="Café"), ensure_ascii=False).encode("utf-8").replace(b"\xc3\xa9", b"\xe9"),
    )
    write(desk.inbox / "surrogate.json", json.dumps(ticket("T016")).replace("has not", "has \\ud800 not"))
    write(desk.inbox / "nul.json", ticket("T018", subject="a\u0000b"))
    write(desk.inbox / "list.json", "[1, 2]")
    write(desk.inbox / "big.json", ticket("T017", body="y" * 40_000))
    os.symlink(PASSWD, desk.inbox / "passwd.json")
    os.mkfifo(desk.inbox / "pipe.json")

    keys = sorted(register_tickets(desk.instance, desk.triage).files)
    result = desk.materialize(keys)

    rows = {row.ticket: row for row in desk.table()}
    assert sorted(rows) == keys
    received = {k for k, r in rows.items() if r.status == "received"}
    assert received == {"samples/T001.json", "samples/T002.json"}
    assert rows["samples/T001.json"].received_at == "2026-11-27T09:14:00Z"  # normalized to UTC
    assert rows["samples/T002.json"].customer_id == "C002" and rows["samples/T002.json"].content_hash
    reasons = {k: r.quarantine_reason for k, r in rows.items() if r.status == "quarantined"}
    assert reasons["samples/T009.json"] == "duplicate: ticket_id T001 is also in samples/T001.json"
    assert reasons["inbox/malformed.json"].startswith("invalid_json: Expecting value at line 1")
    assert reasons["inbox/no-customer.json"] == "invalid_ticket: customer_id: missing"
    assert reasons["inbox/empty-id.json"] == "invalid_ticket: ticket_id: is empty"
    assert reasons["inbox/bad-time.json"].startswith("invalid_ticket: received_at: not an ISO-8601 date and time")
    assert reasons["inbox/naive-time.json"].startswith("invalid_ticket: received_at: has no timezone")
    assert reasons["inbox/long-body.json"] == "invalid_ticket: body: String should have at most 20000 characters"
    assert reasons["inbox/latin1.json"].startswith("encoding: not UTF-8 text (byte 0xe9")
    assert reasons["inbox/surrogate.json"].startswith("invalid_ticket: body: Input should be a valid string")
    assert reasons["inbox/nul.json"] == "invalid_ticket: subject: contains a NUL character"
    assert reasons["inbox/list.json"] == "invalid_json: top level is list, not an object"
    assert reasons["inbox/big.json"].startswith("too_large: ") and "max_ticket_bytes=30000" in reasons["inbox/big.json"]
    assert rows["inbox/big.json"].content_hash  # hashed, never parsed
    assert reasons["inbox/passwd.json"].startswith("unsafe_path: symlink resolves outside the watched folder")
    assert reasons["inbox/pipe.json"] == "not_regular_file: FIFO (named pipe); only regular files are read"
    # Nothing of /etc/passwd was read into any row.
    secret = PASSWD.read_text().splitlines()[0]
    assert not any(secret in str(value) for row in rows.values() for value in row.model_dump().values())
    assert all(not r.ticket_id and not r.body for r in rows.values() if r.status == "quarantined")

    # Each partition's metadata is its own; the blocking check names what was quarantined.
    metadata = {
        e.partition: {k: v.value for k, v in e.materialization.metadata.items()}
        for e in result.get_asset_materialization_events()
    }
    assert (metadata["samples/T002.json"]["received"], metadata["samples/T002.json"]["quarantined"]) == (1, 0)
    assert metadata["inbox/pipe.json"]["status"] == "quarantined: not_regular_file"
    assert "| samples/T002.json | C002 | Question T002 | received |" in metadata["samples/T002.json"]["preview"]
    check = check_evaluation(result)
    assert not check.passed and check.blocking
    assert check.metadata["quarantined"].value == len(keys) - 2
    assert "inbox/passwd.json" in check.metadata["quarantined_tickets"].value
    assert not result.success  # the blocking check stops the run


@pytest.mark.integration
def test_a_few_bad_tickets_pass_the_check(desk):
    for number in range(1, 4):
        write(desk.samples / f"T00{number}.json", ticket(f"T00{number}"))
    write(desk.inbox / "broken.json", "{")
    result = desk.materialize(sorted(register_tickets(desk.instance, desk.triage).files))
    check = check_evaluation(result)
    assert result.success and check.passed
    assert (check.metadata["received"].value, check.metadata["quarantined"].value) == (3, 1)


@pytest.mark.unit
def test_ticket_file_format():
    parsed = TicketFile.model_validate({**ticket(" T1 "), "extra": "ignored"})
    assert parsed.ticket_id == "T1"
    with pytest.raises(ValueError, match="subject and body are both empty"):
        TicketFile.model_validate(ticket("T1", subject=" ", body=""))
    with pytest.raises(ValueError, match="ticket_id"):
        TicketFile.model_validate(ticket("T1/../../x"))
    with pytest.raises(ValueError, match="ticket_id"):
        TicketFile.model_validate(ticket(7))


@pytest.mark.integration
def test_a_key_outside_the_ticket_folders_is_quarantined_unread(desk):
    [escaped, unknown] = read_tickets(desk.triage, ["samples/../../etc/passwd", "elsewhere/T1.json"])
    assert escaped.quarantine_reason.startswith("unsafe_path: ticket key") and escaped.status == "quarantined"
    assert unknown.quarantine_reason.startswith("unsafe_path: ticket key 'elsewhere/T1.json' is not <samples|inbox>")


class Sensor:
    """Ticks the sensor the way the daemon does: same instance, cursor carried over,
    partitions added before the runs are launched."""

    def __init__(self, desk: Desk):
        self.desk = desk
        self.cursor: str | None = None

    def tick(self) -> SensorResult:
        context = build_sensor_context(
            instance=self.desk.instance, cursor=self.cursor, resources={"triage": self.desk.triage}
        )
        result = ticket_inbox_sensor(context)
        assert isinstance(result, SensorResult)
        self.cursor = result.cursor or self.cursor
        for request in result.dynamic_partitions_requests or []:
            assert isinstance(request, AddDynamicPartitionsRequest)  # the sensor never deletes a ticket
            self.desk.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        return result

    def execute(self, request):
        job = self.desk.defs.resolve_job_def(request.job_name)
        result = job.execute_in_process(
            instance=self.desk.instance, partition_key=request.partition_key, tags=dict(request.tags)
        )
        return sorted(e.partition for e in result.get_asset_materialization_events())


def added(result: SensorResult) -> list[str]:
    return [k for r in result.dynamic_partitions_requests or [] for k in r.partition_keys]


@pytest.mark.integration
def test_sensor_registers_new_tickets_and_runs_them_together_once(desk):
    for number in range(1, 4):
        write(desk.samples / f"T00{number}.json", ticket(f"T00{number}"))
    sensor = Sensor(desk)
    first = sensor.tick()
    keys = ["samples/T001.json", "samples/T002.json", "samples/T003.json"]
    assert added(first) == keys
    [request] = first.run_requests
    assert request.job_name == "triage_job" and request.partition_key is None
    assert (request.tags[ASSET_PARTITION_RANGE_START_TAG], request.tags[ASSET_PARTITION_RANGE_END_TAG]) == (
        keys[0],
        keys[-1],
    )
    assert sensor.execute(request) == keys

    unchanged = sensor.tick()
    assert not unchanged.run_requests and not added(unchanged) and unchanged.skip_reason

    write(desk.inbox / "new.json", ticket("T004"))
    new = sensor.tick()
    assert added(new) == ["inbox/new.json"]
    [one] = new.run_requests
    assert one.partition_key == "inbox/new.json"
    assert sensor.execute(one) == ["inbox/new.json"]

    write(desk.samples / "T002.json", ticket("T002", body="Update: it arrived damaged."))
    edited = sensor.tick()
    [rerun] = edited.run_requests
    assert rerun.partition_key == "samples/T002.json" and not added(edited)

    (desk.samples / "T003.json").unlink()
    removed = sensor.tick()
    assert not removed.run_requests and not added(removed) and removed.skip_reason
    assert "samples/T003.json" in desk.instance.get_dynamic_partitions(TICKETS.name)


@pytest.mark.integration
def test_sensor_adopts_tickets_the_command_already_triaged(desk):
    write(desk.samples / "T001.json", ticket("T001"))
    write(desk.samples / "T002.json", ticket("T002"))
    run_triage(desk.defs, desk.instance, desk.triage, raise_on_error=False)
    result = Sensor(desk).tick()
    assert not result.run_requests and not added(result)


@pytest.mark.integration
def test_triage_command_runs_what_is_not_triaged_yet_as_one_run(desk):
    write(desk.samples / "T001.json", ticket("T001"))
    write(desk.samples / "T002.json", ticket("T002"))
    write(desk.inbox / "bad.json", "not json")

    plan, result = run_triage(desk.defs, desk.instance, desk.triage, raise_on_error=False)
    assert plan.tickets == ["inbox/bad.json", "samples/T001.json", "samples/T002.json"]
    report = TriageReport.from_result(result)
    assert (report.received, [t for t, _ in report.quarantined]) == (2, ["inbox/bad.json"])
    assert not report.ok and report.blocked_by[0][0] == "tickets_mostly_readable"  # 1 of 3 > 25%
    assert "Tickets processed: 3 (2 received, 1 quarantined)" in report.render()

    plan, result = run_triage(desk.defs, desk.instance, desk.triage, raise_on_error=False)
    assert result is None and plan.reason == "all 3 tickets are triaged"

    write(desk.inbox / "late.json", ticket("T003"))
    plan, result = run_triage(desk.defs, desk.instance, desk.triage, raise_on_error=False)
    assert plan.covered == ["inbox/late.json"] and result.success
    assert [e.partition for e in result.get_asset_materialization_events()] == ["inbox/late.json"]
    assert check_evaluation(result).metadata["tickets"].value == 1  # the check judges the run's tickets only

    (desk.samples / "T001.json").unlink()  # kept as a partition, never re-run by the command
    write(desk.samples / "T002.json", ticket("T002", body="Edited."))
    plan, _ = run_triage(desk.defs, desk.instance, desk.triage, raise_on_error=False)
    assert plan.tickets == ["samples/T002.json"]

    plan, result = run_triage(desk.defs, desk.instance, desk.triage, everything=True, raise_on_error=False)
    assert plan.tickets == ["inbox/bad.json", "samples/T002.json", "inbox/late.json"]
    assert plan.covered[1] == "samples/T001.json" and "1 of them with their file removed" in plan.reason
    assert len(desk.instance.get_runs()) == 4  # one run per call that had work
    assert "samples/T001.json" in desk.instance.get_dynamic_partitions(TICKETS.name)


@pytest.mark.integration
def test_triage_cli(tmp_path, monkeypatch, capsys):
    """`ai-pipelines triage` as a person runs it: same command path (settings, Dagster home,
    instance, report, exit code), with the code location cut down to the intake so that the
    test exercises the command rather than the later triage stages."""
    import ai_pipelines.definitions as definitions
    from ai_pipelines.cli import main

    desk = Desk(tmp_path)
    write(desk.samples / "T001.json", ticket("T001"))
    write(desk.samples / "T002.json", ticket("T002"))
    real_resources = definitions.build_resources
    monkeypatch.setattr(
        definitions, "build_resources", lambda settings: {**real_resources(settings), "triage": desk.triage}
    )
    monkeypatch.setattr(definitions, "build_definitions", lambda settings: desk.defs)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AI_PIPELINES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))

    assert main(["triage"]) == 0
    out = capsys.readouterr().out
    assert "Triaged: 2 of 2 tickets (2 new, 0 edited)." in out and "succeeded" in out
    assert "Tickets processed: 2 (2 received, 0 quarantined)" in out
    assert main(["triage"]) == 0
    assert "Up to date: all 2 tickets are triaged" in capsys.readouterr().out
    write(desk.inbox / "a.json", "{")
    write(desk.inbox / "b.json", "[]")
    assert main(["triage"]) == 1  # both new tickets quarantined: the blocking check fails the run
    out = capsys.readouterr().out
    assert "quarantined inbox/a.json: invalid_json" in out and "BLOCKED: check 'tickets_mostly_readable'" in out
    with DagsterInstance.from_config(str(tmp_path / "dagster_home")) as instance:
        assert instance.get_materialized_partitions(AssetKey("support_tickets")) == {
            "samples/T001.json",
            "samples/T002.json",
            "inbox/a.json",
            "inbox/b.json",
        }
