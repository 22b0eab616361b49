"""The warehouse types its tables from the row models, whatever the rows of one write hold."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, DynamicPartitionsDefinition, asset, materialize
from pydantic import BaseModel

from resources.tables import WAREHOUSE, table_metadata, to_frame
from resources.warehouse import WarehouseIOManager

pytestmark = pytest.mark.integration

PARTS = DynamicPartitionsDefinition(name="parts")


class Evidence(BaseModel):
    quote: str
    start: int


class Row(BaseModel):
    part: str
    status: str
    count: int
    evidence: Evidence | None = None


def _materialize(tmp_path: Path, instance: DagsterInstance, rows: list[Row], partition: str) -> None:
    @asset(partitions_def=PARTS, io_manager_key=WAREHOUSE, metadata=table_metadata(Row, partition_expr="part"))
    def rows_table():
        return to_frame(rows, Row)

    result = materialize(
        [rows_table],
        partition_key=partition,
        instance=instance,
        resources={"warehouse_io_manager": WarehouseIOManager(database=str(tmp_path / "w.duckdb"), schema="s")},
    )
    assert result.success


def _column_types(tmp_path: Path) -> dict[str, str]:
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as db:
        return dict(
            db.execute(
                "select column_name, data_type from information_schema.columns where table_name = 'rows_table'"
            ).fetchall()
        )


def test_an_all_empty_optional_column_does_not_break_later_writes(tmp_path: Path):
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("parts", ["a", "b"])
    _materialize(tmp_path, instance, [Row(part="a", status="failed", count=0)], "a")
    assert _column_types(tmp_path)["evidence"] == "VARCHAR"
    _materialize(
        tmp_path, instance, [Row(part="b", status="valid", count=2, evidence=Evidence(quote="q", start=3))], "b"
    )
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as db:
        assert db.execute("select part, evidence from s.rows_table order by part").fetchall() == [
            ("a", None),
            ("b", '{"quote": "q", "start": 3}'),
        ]


def test_a_table_left_with_null_typed_and_missing_columns_is_repaired(tmp_path: Path):
    with duckdb.connect(str(tmp_path / "w.duckdb")) as db:
        db.execute("create schema s")
        db.execute("create table s.rows_table as select 'a' as part, 'failed' as status, NULL as evidence")
        assert {row[0]: row[1] for row in db.execute("describe s.rows_table").fetchall()}["evidence"] == '"NULL"'
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("parts", ["b"])
    _materialize(
        tmp_path, instance, [Row(part="b", status="valid", count=1, evidence=Evidence(quote="q", start=0))], "b"
    )
    types = _column_types(tmp_path)
    assert types["evidence"] == "VARCHAR" and types["count"] == "BIGINT"


def test_rewriting_a_partition_replaces_its_rows(tmp_path: Path):
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("parts", ["a"])
    for _ in range(2):
        _materialize(
            tmp_path, instance, [Row(part="a", status="valid", count=1), Row(part="a", status="valid", count=2)], "a"
        )
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as db:
        assert db.execute("select count(*) from s.rows_table").fetchone() == (2,)
