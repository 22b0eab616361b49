"""How every asset of the project is declared: one small value per asset, from which the
keywords of Dagster's `@asset` and `@multi_asset` follow.

The value holds what varies per asset. What the project does the same way everywhere is
decided here once, so that no asset can quietly differ: a table's rows are stored by the
warehouse IO manager (DuckDB) under the column schema of their pydantic model, with the
column that holds the partition key; a partitioned asset is backfilled in a single run, so
a stage reads and replaces the rows of many partitions in one computation rather than one
run per file; an asset that calls the models takes a slot of the model endpoints'
concurrency pool; and the team owns every asset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import AbstractSet, Any

from dagster import AssetIn, AssetKey, AssetOut, AutomationCondition, BackfillPolicy, PartitionsDefinition
from pydantic import BaseModel

from assets.components.partitions import partition_column
from resources.gateway.model import MODEL_POOL
from resources.tables import OWNERS, WAREHOUSE, table_metadata

# The kind of every asset stored by the warehouse IO manager.
WAREHOUSE_KIND = "duckdb"


@dataclass(frozen=True, kw_only=True)
class PipelineAssetSpec:
    """What one asset declares; `asset_keywords()` adds the project's defaults."""

    group: str
    code_version: str
    # The asset's key; by default the decorated function's name.
    name: str | None = None
    # By default the decorated function's docstring.
    description: str | None = None
    # The pydantic model of the rows of a warehouse table; None for an asset stored otherwise.
    rows: type[BaseModel] | None = None
    partitions: PartitionsDefinition | None = None
    # Beside `duckdb`, which a warehouse table always has.
    kinds: AbstractSet[str] = frozenset()
    # An asset that calls the models holds a slot of `pool` while it computes.
    calls_model: bool = False
    pool: str = MODEL_POOL
    # Upstream assets handed to the computation by key, for a computation that takes them as
    # keyword arguments; an asset whose function names its inputs as parameters needs none.
    ins: Sequence[str] = ()
    # Upstream assets the computation does not load.
    deps: Sequence[Any] = ()
    # Beside the column schema and the partition column.
    metadata: Mapping[str, object] = field(default_factory=dict)
    automation_condition: AutomationCondition | None = None
    # Resources the computation reads from its context rather than as parameters.
    required_resource_keys: AbstractSet[str] = frozenset()
    # False for an asset that may legitimately produce nothing (an unapproved publication).
    output_required: bool = True

    @property
    def all_kinds(self) -> set[str]:
        return ({WAREHOUSE_KIND} if self.rows is not None else set()) | set(self.kinds)

    @property
    def all_metadata(self) -> dict[str, object]:
        """A table's column schema first, then what the asset declares, then its partition column."""
        if self.rows is None:
            return dict(self.metadata)
        column = partition_column(self.partitions)
        return table_metadata(self.rows, **self.metadata, **({"partition_expr": column} if column else {}))

    def asset_keywords(self) -> dict[str, Any]:
        """The keywords of `@asset`; a keyword left at Dagster's default is left out."""
        keywords: dict[str, Any] = {
            "name": self.name,
            "group_name": self.group,
            "description": self.description,
            "code_version": self.code_version,
            "owners": OWNERS,
            "kinds": self.all_kinds or None,
            "metadata": self.all_metadata or None,
            "io_manager_key": WAREHOUSE if self.rows is not None else None,
            "partitions_def": self.partitions,
            "backfill_policy": BackfillPolicy.single_run() if self.partitions is not None else None,
            "pool": self.pool if self.calls_model else None,
            "ins": {name: AssetIn(AssetKey.from_user_string(name)) for name in self.ins} or None,
            "deps": list(self.deps) or None,
            "automation_condition": self.automation_condition,
            "required_resource_keys": set(self.required_resource_keys) or None,
            "output_required": None if self.output_required else False,
        }
        return {key: value for key, value in keywords.items() if value is not None}

    def asset_out(self) -> AssetOut:
        """This asset as one output of a `@multi_asset` (see `multi_asset_keywords`)."""
        keywords = self.asset_keywords()
        return AssetOut(
            description=keywords.get("description"),
            io_manager_key=keywords.get("io_manager_key"),
            kinds=keywords.get("kinds"),
            owners=keywords["owners"],
            metadata=keywords.get("metadata"),
            automation_condition=keywords.get("automation_condition"),
            is_required=self.output_required,
        )


# What the outputs of one computation share: the op's keywords rather than each output's.
_SHARED = (
    "group_name",
    "code_version",
    "partitions_def",
    "backfill_policy",
    "pool",
    "ins",
    "deps",
    "required_resource_keys",
)


def multi_asset_keywords(outs: Mapping[str, PipelineAssetSpec]) -> dict[str, Any]:
    """The keywords of `@multi_asset` for one computation that stores several assets, each
    declared like any other; they must agree on what their computation decides for all of
    them (group, code version, partitions, pool, inputs)."""
    shared = [{k: v for k, v in spec.asset_keywords().items() if k in _SHARED} for spec in outs.values()]
    if any(keywords != shared[0] for keywords in shared[1:]):
        raise ValueError(f"the outputs {', '.join(outs)} of one computation declare different {', '.join(_SHARED)}")
    return {**shared[0], "outs": {name: spec.asset_out() for name, spec in outs.items()}}
