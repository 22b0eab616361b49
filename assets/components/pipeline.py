"""A pipeline is a folder under `assets/`: its stage modules, its YAML steps (a `steps/`
package of step folders, for a pipeline that has any) and the asset groups it owns, declared
once in the folder's `__init__.py`.

Jobs select a pipeline by its groups, and definition loading fails when an asset names a
group its pipeline does not declare, so a new group cannot silently join another
pipeline's job. Adding a pipeline is adding a folder and listing it in `assets/__init__.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from types import ModuleType

from dagster import (
    AssetChecksDefinition,
    AssetsDefinition,
    AssetSelection,
    PartitionsDefinition,
    load_asset_checks_from_modules,
    load_assets_from_modules,
)


@dataclass(frozen=True)
class Pipeline:
    name: str
    groups: tuple[str, ...]
    stages: tuple[ModuleType, ...]
    # The defs package of the pipeline's YAML-declared steps (one folder per step).
    steps: ModuleType | None = None
    # What a run of one arrival (a document, a ticket) covers: the partitions and the assets.
    partitions_def: PartitionsDefinition | None = None
    per_partition: tuple[str, ...] = ()
    # Assets that wait for a person's decision: no job that runs unattended includes them.
    awaits_a_person: tuple[str, ...] = ()

    @cached_property
    def assets(self) -> list[AssetsDefinition]:
        return [a for a in load_assets_from_modules(list(self.stages)) if isinstance(a, AssetsDefinition)]

    @cached_property
    def asset_checks(self) -> list[AssetChecksDefinition]:
        return list(load_asset_checks_from_modules(list(self.stages)))

    def selection(self) -> AssetSelection:
        return AssetSelection.groups(*self.groups)

    def awaiting_a_person(self) -> AssetSelection:
        return AssetSelection.assets(*self.awaits_a_person)

    def unattended(self) -> AssetSelection:
        """Everything a schedule, a sensor or the run command may materialize without a person."""
        return self.selection() - self.awaiting_a_person()

    def per_partition_selection(self) -> AssetSelection:
        return AssetSelection.assets(*self.per_partition)

    def check_groups(self, assets: list[AssetsDefinition]) -> None:
        """Every asset of this pipeline (Python-declared or a step) sits in a declared group."""
        keys = {key.to_user_string() for asset in assets for key in asset.keys}
        for name in (*self.per_partition, *self.awaits_a_person):
            if name not in keys:
                raise ValueError(f"the {self.name} pipeline names {name!r}, which is none of its assets")
        for asset in assets:
            for key, group in asset.group_names_by_key.items():
                if group not in self.groups:
                    raise ValueError(
                        f"asset {key.to_user_string()} is in group {group!r}, which the {self.name} pipeline "
                        f"does not declare (assets/{self.name}/__init__.py declares {', '.join(self.groups)})"
                    )
