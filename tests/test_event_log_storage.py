"""PooledSqliteEventLogStorage: a drop-in for Dagster's SQLite event log storage whose
files stay readable by the default storage, and which is safe for threads."""

import threading
from pathlib import Path

import pytest
from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    DagsterInstance,
    DynamicPartitionsDefinition,
    asset,
    materialize,
)
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.event_log import SqliteEventLogStorage
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from ai_pipelines.event_log_storage import PooledSqliteEventLogStorage
from ai_pipelines.instance import EVENT_BATCH_VARIABLE, instance_yaml

pytestmark = pytest.mark.integration

DOCS = DynamicPartitionsDefinition(name="docs")
KEYS = ["d1", "d2", "d3", "d4"]


@asset(partitions_def=DOCS, backfill_policy=BackfillPolicy.single_run())
def parts(context: AssetExecutionContext) -> None:
    for key in context.partition_keys:
        # goes through has_dynamic_partition, the call that was slow
        context.add_asset_metadata({"key": key}, partition_key=key)


@asset
def chatty(context: AssetExecutionContext) -> None:
    def log(name: str) -> None:
        for i in range(40):
            context.log.info(f"{name}-{i}")

    threads = [threading.Thread(target=log, args=(name,)) for name in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def pooled_instance(home: Path) -> DagsterInstance:
    """The instance as the run command configures a new home."""
    (home / "dagster.yaml").write_text(instance_yaml(home))
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def default_instance(home: Path, empty_config_dir: Path) -> DagsterInstance:
    """Dagster's own SQLite storage on the same home (no dagster.yaml is read)."""
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(home), config_dir=str(empty_config_dir)))


def materialized_keys(instance: DagsterInstance) -> set[str]:
    return set(instance.get_materialized_partitions(parts.key))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "empty").mkdir()
    return tmp_path / "home"


@pytest.mark.parametrize("batch_size", ["0", "3"], ids=["event by event", "in batches"])
def test_partitioned_run_is_readable_by_both_storages(
    home: Path, batch_size: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EVENT_BATCH_VARIABLE, batch_size)  # 3: four partitions make a batch of 3 and one of 1
    instance = pooled_instance(home)
    storage = instance.event_log_storage
    assert type(storage) is PooledSqliteEventLogStorage
    instance.add_dynamic_partitions(DOCS.name, KEYS)

    tags = {ASSET_PARTITION_RANGE_START_TAG: KEYS[0], ASSET_PARTITION_RANGE_END_TAG: KEYS[-1]}
    result = materialize([parts], instance=instance, tags=tags)
    assert result.success
    assert materialized_keys(instance) == set(KEYS)
    assert storage._engine_for_shard("index") is storage._engine_for_shard("index")
    assert "dynamic_partitions" in storage._existing_tables
    n_events = len(instance.all_logs(result.run_id))
    instance.dispose()
    # the pooled connections are closed: the last close checkpointed and removed the WAL
    assert not list((home / "history" / "runs").glob("*.db-wal"))

    other = default_instance(home, home.parent / "empty")
    assert type(other.event_log_storage) is SqliteEventLogStorage
    assert materialized_keys(other) == set(KEYS)
    assert len(other.all_logs(result.run_id)) == n_events
    record = other.get_latest_materialization_event(parts.key)
    assert record is not None and record.run_id == result.run_id
    # the asset's own row ends as event-by-event writing leaves it: the run's last materialization
    materialized = [
        e.dagster_event.partition
        for e in other.all_logs(result.run_id)
        if e.dagster_event and e.dagster_event.is_step_materialization
    ]
    assert record.dagster_event.partition == materialized[-1] and len(materialized) == len(KEYS)
    by_partition = {
        r.partition_key: r.asset_materialization.metadata["key"].value
        for r in other.fetch_materializations(parts.key, limit=10).records
    }
    assert by_partition == {k: k for k in KEYS}  # each partition's own metadata, whichever way it was written
    # and the other way round: a run written by the default storage reads back pooled
    again = materialize([parts], instance=other, partition_key="d2")
    other.dispose()
    reopened = pooled_instance(home)
    latest = reopened.get_latest_materialization_event(parts.key)
    assert latest is not None and latest.run_id == again.run_id
    assert reopened.get_dynamic_partitions(DOCS.name) == KEYS
    reopened.dispose()


def test_two_threads_logging_in_one_run(home: Path) -> None:
    instance = pooled_instance(home)
    result = materialize([chatty], instance=instance)
    assert result.success
    messages = {e.user_message for e in instance.all_logs(result.run_id)}
    assert {f"{n}-{i}" for n in "ab" for i in range(40)} <= messages
    instance.dispose()


def test_partition_keys_are_read_again_whenever_another_process_or_this_one_changed_them(home: Path) -> None:
    pooled = pooled_instance(home)
    other = default_instance(home, home.parent / "empty")  # another connection, as another process has
    pooled.add_dynamic_partitions(DOCS.name, ["a", "b"])
    assert pooled.get_dynamic_partitions(DOCS.name) == ["a", "b"]
    assert pooled.get_dynamic_partitions(DOCS.name) == ["a", "b"]  # from the cache
    other.delete_dynamic_partition(DOCS.name, "b")
    other.add_dynamic_partitions(DOCS.name, ["c"])  # may reuse b's row id: the version still changes
    assert pooled.get_dynamic_partitions(DOCS.name) == ["a", "c"]
    pooled.delete_dynamic_partition(DOCS.name, "a")
    assert pooled.get_dynamic_partitions(DOCS.name) == ["c"]
    pooled.add_dynamic_partitions(DOCS.name, ["d"])
    assert pooled.get_dynamic_partitions(DOCS.name) == ["c", "d"]
    assert other.get_dynamic_partitions(DOCS.name) == ["c", "d"]
    pooled.dispose()
    other.dispose()
    # membership answers from the same keys
    again = pooled_instance(home)
    assert again.has_dynamic_partition(DOCS.name, "c") and not again.has_dynamic_partition(DOCS.name, "b")
    default_instance(home, home.parent / "empty").add_dynamic_partitions(DOCS.name, ["b"])
    assert again.has_dynamic_partition(DOCS.name, "b")
    again.dispose()
