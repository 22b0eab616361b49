"""Tables between steps: pydantic rows in, pandas DataFrames out, and back.

Every asset emits rows validated by its pydantic model; the IO manager stores the
DataFrame in DuckDB where a person can query it. Nested fields (lists, dicts) are kept
as JSON text so that every table has plain SQL column types.
"""

from __future__ import annotations

import json
from typing import Iterable, TypeVar

import pandas as pd
from dagster import TableColumn, TableSchema
from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_SQL_TYPES = {int: "BIGINT", float: "DOUBLE", bool: "BOOLEAN", str: "VARCHAR"}


def to_frame(rows: Iterable[BaseModel], model: type[BaseModel]) -> pd.DataFrame:
    records = []
    for row in rows:
        record = row.model_dump(mode="json")
        records.append(
            {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in record.items()}
        )
    frame = pd.DataFrame.from_records(records, columns=list(model.model_fields))
    for name, field in model.model_fields.items():
        if field.annotation in (int, float, bool) and not frame.empty:
            frame[name] = frame[name].astype(field.annotation)
        elif frame.empty:
            frame[name] = frame[name].astype(_pandas_dtype(field.annotation))
    return frame


def from_frame(frame: pd.DataFrame, model: type[M]) -> list[M]:
    nested = {
        name
        for name, field in model.model_fields.items()
        if field.annotation not in (int, float, bool, str)
    }
    rows = []
    for record in frame.to_dict(orient="records"):
        for name in nested & record.keys():
            if isinstance(record[name], str):
                record[name] = json.loads(record[name])
        rows.append(model.model_validate(record))
    return rows


def table_schema(model: type[BaseModel]) -> TableSchema:
    """The column schema shown on the asset page, taken from the row model."""
    return TableSchema(
        columns=[
            TableColumn(
                name=name,
                type=_SQL_TYPES.get(field.annotation, "JSON"),  # type: ignore[arg-type]
                description=field.description or "",
            )
            for name, field in model.model_fields.items()
        ]
    )


def _pandas_dtype(annotation: object) -> str:
    return {int: "int64", float: "float64", bool: "bool"}.get(annotation, "string")  # type: ignore[arg-type]
