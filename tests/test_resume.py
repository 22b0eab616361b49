"""A run killed with SIGKILL: marked failed on the next start, and resumed from failure
without paying again for the model calls it completed."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from dagster import AssetKey, DagsterInstance, DagsterRun, DagsterRunStatus
from dagster._core.events import DagsterEventType
from dagster._core.instance.ref import InstanceRef
from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.utils import make_new_run_id

from ai_pipelines.run_process import RunProcess
from ai_pipelines.run_recovery import ResumeError, fail_orphaned_runs, run_to_resume
from resources.documents.batches import batches_of
from tests.conftest import CLI, ROOT, process_environment
from tests.fake_openai import FakeOpenAI, Fault

# Tiers, marked per test: reading the instance is unit; starting or killing processes, integration.

SAMPLE_CORPUS = ROOT / "resources" / "documents" / "sample_corpus"
DOCUMENTS = 40


def add_run(instance: DagsterInstance, tags: dict[str, str], status=DagsterRunStatus.STARTED, **fields) -> DagsterRun:
    return instance.add_run(
        DagsterRun(job_name="digest_job", run_id=make_new_run_id(), status=status, tags=tags, **fields)
    )


def failure_message(instance: DagsterInstance, run_id: str) -> str:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE).records
    return records[-1].event_log_entry.dagster_event.message if records else ""


def _reaped_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.integration  # starts processes to have pids of dead ones
def test_orphan_sweep_fails_runs_of_dead_processes_only():
    here = RunProcess.current()
    webserver_origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(
            InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="ai_pipelines.definitions")), "__repository__"
        ),
        "digest_job",
    )
    with DagsterInstance.ephemeral() as instance:
        dead = add_run(instance, here.model_copy(update={"pid": _reaped_pid()}).tags())
        recycled = add_run(instance, here.model_copy(update={"started": "another-boot:1"}).tags())
        live = add_run(instance, here.tags())
        elsewhere = add_run(instance, here.model_copy(update={"host": "another-host", "pid": _reaped_pid()}).tags())
        container = add_run(instance, here.model_copy(update={"namespace": "pid:[1]", "pid": _reaped_pid()}).tags())
        untagged = add_run(instance, {})
        launched = add_run(
            instance, here.model_copy(update={"pid": _reaped_pid()}).tags(), remote_job_origin=webserver_origin
        )
        finished = add_run(
            instance, here.model_copy(update={"pid": _reaped_pid()}).tags(), status=DagsterRunStatus.SUCCESS
        )

        orphans = fail_orphaned_runs(instance)

        assert {o.run_id for o in orphans} == {dead.run_id, recycled.run_id}
        runs = [dead, recycled, live, elsewhere, container, untagged, launched, finished]
        status = {run.run_id: instance.get_run_by_id(run.run_id).status for run in runs}
        assert status == {
            dead.run_id: DagsterRunStatus.FAILURE,
            recycled.run_id: DagsterRunStatus.FAILURE,
            live.run_id: DagsterRunStatus.STARTED,
            elsewhere.run_id: DagsterRunStatus.STARTED,
            container.run_id: DagsterRunStatus.STARTED,
            untagged.run_id: DagsterRunStatus.STARTED,
            launched.run_id: DagsterRunStatus.STARTED,
            finished.run_id: DagsterRunStatus.SUCCESS,
        }
        pid = dead.tags["ai_pipelines/pid"]
        assert failure_message(instance, dead.run_id) == (
            f"process {pid} on host {here.host} is gone: the run was killed; "
            f"resume it with `ai-pipelines run --resume {dead.run_id}`"
        )
        assert fail_orphaned_runs(instance) == []  # once only


@pytest.mark.unit
def test_resume_says_why_a_run_cannot_be_resumed():
    with DagsterInstance.ephemeral() as instance:
        with pytest.raises(ResumeError, match="digest_job or digest_refresh_job never ran"):
            run_to_resume(instance, None)
        with pytest.raises(ResumeError, match="no run 'nope'"):
            run_to_resume(instance, "nope")
        done = add_run(instance, {}, status=DagsterRunStatus.SUCCESS)
        with pytest.raises(ResumeError, match=f"run {done.run_id} \\(digest_job\\) is success"):
            run_to_resume(instance, None)
        failed = add_run(instance, {}, status=DagsterRunStatus.FAILURE)
        assert run_to_resume(instance, None).run_id == failed.run_id
        assert run_to_resume(instance, failed.run_id).run_id == failed.run_id
        with pytest.raises(ResumeError, match="is started"):
            run_to_resume(instance, add_run(instance, RunProcess.current().tags()).run_id)


# The end-to-end scenario.


def make_corpus(folder: Path) -> None:
    """The sample corpus, topped up to DOCUMENTS with generated news items."""
    folder.mkdir(parents=True)
    for path in SAMPLE_CORPUS.iterdir():
        shutil.copy(path, folder / path.name)
    for index in range(DOCUMENTS - len(list(folder.iterdir()))):
        (folder / f"generated-{index:02d}.md").write_text(
            f"# Orion Freight Company update {index}\n\n"
            f"Orion Freight Company reported {100 + index} new contracts in week {index + 1}. "
            f"Chief executive Maria Lindqvist said volumes at the Gdansk Terminal rose {index + 3} percent. "
            "Analysts at Baltic Research Partners expect further growth next quarter.\n"
        )


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def cached_answers(data_dir: Path) -> int:
    path = data_dir / "cache" / "responses.sqlite"
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
    try:
        return db.execute("select count(*) from responses").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet, or busy
        return 0
    finally:
        db.close()


def answered_ok(llm: FakeOpenAI, schema: str = "") -> int:
    with llm._lock:
        return sum(1 for e in llm.answered if e.status == 200 and schema in e.schema)


@pytest.mark.integration
@pytest.mark.reliability
def test_a_run_killed_during_signals_is_failed_then_resumed_without_paying_twice(tmp_path, settings, llm):
    corpus, data, home = tmp_path / "corpus", settings.data_dir, tmp_path / "dagster_home"
    make_corpus(corpus)
    env = process_environment(
        settings,
        AI_PIPELINES_CORPUS_DIR=str(corpus),
        DAGSTER_HOME=str(home),
        # The scenario is about signals: keep the stages after it small.
        AI_PIPELINES_MAX_TOPICS="1",
        AI_PIPELINES_CLAIMS_PER_DRAFT="1",
    )
    llm.persistent_fault = Fault(status=0, delay_seconds=0.2)  # a slow provider: calls overlap the kill

    log = tmp_path / "killed_run.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(CLI), "run"], cwd=tmp_path, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for(
            lambda: answered_ok(llm, "ExtractedSignals") >= 8 or process.poll() is not None, 300, "signals answers"
        )
        assert process.poll() is None, f"the run ended before the kill:\n{log.read_text()}"
        # Hold every further answer, so the calls in progress stay in flight, and let the
        # answers already sent reach the gateway's cache: from then on, what completed and
        # what did not is exact.
        llm.answering.clear()
        wait_for(lambda: cached_answers(data) >= answered_ok(llm), 30, "the gateway to store the answers it received")
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        with llm._lock:
            answered, received = list(llm.answered), list(llm.received)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        llm.persistent_fault = None
        llm.answering.set()
    completed = {e.messages_hash for e in answered if e.status == 200}
    completed_signals = sum(1 for e in answered if e.status == 200 and e.schema == "ExtractedSignals")
    in_flight = {e.messages_hash for e in received} - {e.messages_hash for e in answered}

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        [killed] = instance.get_runs()
        assert killed.status == DagsterRunStatus.STARTED  # what SIGKILL leaves behind

    resumed_cli = subprocess.run(
        [str(CLI), "run", "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    output = resumed_cli.stdout + resumed_cli.stderr
    assert resumed_cli.returncode == 0, output
    reason = f"process {process.pid} on host {RunProcess.current().host} is gone: the run was killed"
    assert f"Marked run {killed.run_id} (digest_job) failed: {reason}" in resumed_cli.stdout
    assert f"Resuming run {killed.run_id} (digest_job) from failure" in resumed_cli.stdout

    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        assert instance.get_run_by_id(killed.run_id).status == DagsterRunStatus.FAILURE
        assert failure_message(instance, killed.run_id).startswith(reason)
        resumed = instance.get_runs(limit=1)[0]
        assert f"Run {resumed.run_id}: succeeded" in resumed_cli.stdout  # the run report, as `run` prints it
        assert resumed.parent_run_id == killed.run_id and resumed.status == DagsterRunStatus.SUCCESS
        steps = resumed.step_keys_to_execute or []
        assert "signals" in steps and {"source_documents", "chunks"}.isdisjoint(steps)  # done before the kill
        documents = instance.get_dynamic_partitions("documents")
        assert len(documents) == DOCUMENTS
        assert set(batches_of(documents)) <= instance.get_materialized_partitions(AssetKey("signals"))

    with llm._lock:
        after_kill = [e.messages_hash for e in llm.received[len(received) :]]
    paid_twice = completed & set(after_kill)
    in_flight_paid_again = in_flight & set(after_kill)
    print(
        f"\nSIGKILL during signals over {DOCUMENTS} documents: {len(completed)} model calls completed before the kill "
        f"({completed_signals} of them signals), {len(in_flight)} in flight; after resume: completed calls paid twice "
        f"{len(paid_twice)}, in-flight calls made again {len(in_flight_paid_again)}, calls after the kill {len(after_kill)}"
    )
    assert completed_signals >= 8 and in_flight
    assert not paid_twice
    assert all(after_kill.count(h) == 1 for h in in_flight_paid_again)  # each call in flight is paid again once at most
