"""The warehouse IO manager: every tabular asset is a DuckDB table a person can query.

DuckDB, because it is one file on disk with no server, reads pandas DataFrames
natively, and answers SQL from its own CLI, from Python or from pandas; the
production path swaps the IO manager, not the assets. The stock pandas handler skips
empty DataFrames, which leaves no table behind and makes downstream loads fail; an
empty result (no quarantined documents, say) is a valid result, so it is stored too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
from dagster import OutputContext
from dagster._core.definitions.metadata import TableMetadataSet
from dagster._core.storage.db_io_manager import DbTypeHandler, TableSlice
from dagster_duckdb import DuckDBIOManager
from dagster_duckdb_pandas import DuckDBPandasTypeHandler


class _PandasTableHandler(DuckDBPandasTypeHandler):
    def handle_output(
        self, context: OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection
    ):
        if not obj.empty:
            return super().handle_output(context, table_slice, obj, connection)
        connection.execute(
            f"create table if not exists {table_slice.schema}.{table_slice.table} "
            "as select * from obj"
        )
        context.add_output_metadata(dict(TableMetadataSet(row_count=0, storage_kind="duckdb")))


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
