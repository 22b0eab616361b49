"""Tables between steps: pydantic rows in, pandas DataFrames out, and back.

Every asset emits rows validated by its pydantic model; the IO manager stores the
DataFrame in DuckDB where a person can query it. Nested fields (lists, dicts) are kept
as JSON text so that every table has plain SQL column types.
"""

from __future__ import annotations

import json
from types import UnionType
from typing import Iterable, TypeVar, Union, get_args, get_origin

import pandas as pd
from dagster import TableColumn, TableSchema
from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_SQL_TYPES = {int: "BIGINT", float: "DOUBLE", bool: "BOOLEAN", str: "VARCHAR"}


def to_frame(rows: Iterable[BaseModel], model: type[BaseModel]) -> pd.DataFrame:
    records = []
    for row in rows:
        record = row.model_dump(mode="json")
        records.append({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in record.items()})
    frame = pd.DataFrame.from_records(records, columns=list(model.model_fields))
    for name, field in model.model_fields.items():
        if field.annotation in (int, float, bool) and not frame.empty:
            frame[name] = frame[name].astype(field.annotation)
        elif frame.empty:
            frame[name] = frame[name].astype(_pandas_dtype(field.annotation))
    return frame


def from_frame(frame: pd.DataFrame, model: type[M]) -> list[M]:
    nested = {name for name, field in model.model_fields.items() if _is_nested(field.annotation)}
    rows = []
    for record in frame.to_dict(orient="records"):
        for name in nested & record.keys():
            if isinstance(record[name], str):
                record[name] = json.loads(record[name])
        rows.append(model.model_validate(record))
    return rows


def _is_nested(annotation: object) -> bool:
    """Lists, dicts and models (optional or not) are stored as JSON text."""
    if get_origin(annotation) in (list, dict):
        return True
    if get_origin(annotation) in (Union, UnionType):
        return any(_is_nested(a) for a in get_args(annotation) if a is not type(None))
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def table_schema(model: type[BaseModel]) -> TableSchema:
    """The column schema shown on the asset page, taken from the row model."""
    return TableSchema(
        columns=[
            TableColumn(
                name=name,
                type="JSON" if _is_nested(field.annotation) else _SQL_TYPES.get(field.annotation, "VARCHAR"),  # type: ignore[arg-type]
                description=field.description or "",
            )
            for name, field in model.model_fields.items()
        ]
    )


def _pandas_dtype(annotation: object) -> str:
    return {int: "int64", float: "float64", bool: "bool"}.get(annotation, "string")  # type: ignore[arg-type]


OWNERS = ["team:ai-pipelines"]
# The IO manager that stores every table asset in the DuckDB warehouse.
WAREHOUSE = "warehouse_io_manager"


def table_metadata(model: type[BaseModel], **metadata: object) -> dict[str, object]:
    """An asset's metadata with the column schema of its `model` rows first."""
    return {"dagster/column_schema": table_schema(model), **metadata}
