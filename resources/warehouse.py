"""The warehouse IO manager: every tabular asset is a DuckDB table a person can query.

DuckDB, because it is one file on disk with no server, reads pandas DataFrames
natively, and answers SQL from its own CLI, from Python or from pandas; the
production path swaps the IO manager, not the assets.

Tables are typed from the asset's declared column schema (the pydantic row model,
see `resources.tables.table_schema`), never inferred from the rows at hand: a first
write whose optional column happened to be all empty would otherwise create a
column of DuckDB type NULL that every later write fails to cast into. For the same
reason a table an older version created is reconciled (missing columns added,
NULL-typed columns retyped) before rows go in, rows are inserted by column name,
and an empty result (no quarantined documents, say) still leaves its table behind.
The slice a step replaces (its partitions, or the whole table) is deleted and
written in one transaction, so two runs writing overlapping partitions at once
leave either run's rows, never both or neither.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Sequence

import duckdb
import pandas as pd
from dagster import OutputContext, TableSchema
from dagster._core.definitions.metadata import TableMetadataSet
from dagster._core.storage.db_io_manager import DbTypeHandler, TableSlice
from dagster_duckdb import DuckDBIOManager
from dagster_duckdb_pandas import DuckDBPandasTypeHandler

COLUMN_SCHEMA_KEY = "dagster/column_schema"
# The column types assets declare (resources.tables) and how DuckDB stores them; nested
# values travel as JSON text.
_DUCKDB_TYPES = {"BIGINT": "BIGINT", "DOUBLE": "DOUBLE", "BOOLEAN": "BOOLEAN", "VARCHAR": "VARCHAR", "JSON": "VARCHAR"}
_CONFLICT_RETRIES = 20


def declared_columns(context: OutputContext) -> dict[str, str] | None:
    """Column name -> DuckDB type from the asset's column schema, or None when it declares none."""
    schema = (context.definition_metadata or {}).get(COLUMN_SCHEMA_KEY)
    schema = getattr(schema, "schema", schema)  # a TableSchemaMetadataValue wraps the schema
    if not isinstance(schema, TableSchema):
        return None
    return {column.name: _DUCKDB_TYPES.get(column.type.upper(), "VARCHAR") for column in schema.columns}


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _slice_filter(table_slice: TableSlice) -> tuple[str, list[str]]:
    """The WHERE clause selecting the rows this output replaces (all rows when unpartitioned)."""
    clauses, params = [], []
    for dimension in table_slice.partition_dimensions or []:
        keys = [str(k) for k in dimension.partitions] if isinstance(dimension.partitions, (list, tuple)) else None
        if keys is None:
            raise NotImplementedError("the warehouse stores only static or dynamic partitions")
        clauses.append(f"{dimension.partition_expr} in ({', '.join('?' * len(keys))})")
        params += keys
    return (" where " + " and ".join(clauses) if clauses else ""), params


def reconcile_table(connection, table: str, columns: Mapping[str, str], partition_columns: Sequence[str] = ()) -> None:
    """Create `table` with the declared types, or bring an existing one in line with them.

    A table that lacks one of `partition_columns` was partitioned another way by an older
    version: its rows could never be replaced by partition, so they are deleted (the run
    planner sees no materialization of the new partitions and writes them all again)."""
    schema_name, table_name = table.split(".", 1)
    existing = dict(
        connection.execute(
            "select column_name, data_type from information_schema.columns where table_schema = ? and table_name = ?",
            [schema_name, table_name],
        ).fetchall()
    )
    if not existing:
        definition = ", ".join(f"{_quoted(name)} {kind}" for name, kind in columns.items())
        connection.execute(f"create table if not exists {table} ({definition})")
        return
    if any(column not in existing for column in partition_columns):
        connection.execute(f"delete from {table}")
    for name, kind in columns.items():
        if name not in existing:
            connection.execute(f"alter table {table} add column {_quoted(name)} {kind}")
        elif existing[name].strip('"').upper() == "NULL":
            connection.execute(f"alter table {table} alter column {_quoted(name)} set data type {kind}")


class _PandasTableHandler(DuckDBPandasTypeHandler):
    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection):
        columns = declared_columns(context)
        if columns is None:  # an asset without a row model: DuckDB infers, as upstream does
            if not obj.empty:
                return super().handle_output(context, table_slice, obj, connection)
            connection.execute(
                f"create table if not exists {table_slice.schema}.{table_slice.table} as select * from obj"
            )
            return
        table = f"{table_slice.schema}.{table_slice.table}"
        partition_columns = [d.partition_expr for d in table_slice.partition_dimensions or []]
        reconcile_table(connection, table, columns, [c for c in partition_columns if c in columns])
        where, params = _slice_filter(table_slice)
        present = [name for name in columns if name in obj.columns]
        selected = ", ".join(f"cast({_quoted(n)} as {columns[n]}) as {_quoted(n)}" for n in present)
        frame = obj[present]  # noqa: F841  (read by DuckDB's replacement scan below)
        for attempt in range(_CONFLICT_RETRIES):
            try:
                connection.execute("begin transaction")
                connection.execute(f"delete from {table}{where}", params)
                if not obj.empty:
                    connection.execute(
                        f"insert into {table} ({', '.join(_quoted(n) for n in present)}) select {selected} from frame"
                    )
                connection.execute("commit")
                break
            except duckdb.TransactionException:
                connection.execute("rollback")
                if attempt == _CONFLICT_RETRIES - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        # Row counts of a multi-partition write would be run totals on every partition;
        # the assets record each partition's own count instead.
        if not table_slice.partition_dimensions:
            context.add_output_metadata(dict(TableMetadataSet(row_count=len(obj), storage_kind="duckdb")))
        elif context.has_partition_key:
            context.add_output_metadata(dict(TableMetadataSet(partition_row_count=len(obj), storage_kind="duckdb")))


class WarehouseIOManager(DuckDBIOManager):
    """Stores pandas DataFrames as DuckDB tables named after their assets."""

    def create_io_manager(self, context):
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        return super().create_io_manager(context)

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [_PandasTableHandler()]

    @staticmethod
    def default_load_type() -> type | None:
        return pd.DataFrame
