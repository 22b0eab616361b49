"""A pipeline is a folder under `assets/`: its stage modules, its YAML steps and the asset
groups it owns, declared once in the folder's `__init__.py`.

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
    load_asset_checks_from_modules,
    load_assets_from_modules,
)


@dataclass(frozen=True)
class Pipeline:
    name: str
    groups: tuple[str, ...]
    stages: tuple[ModuleType, ...]
    # The defs package of the pipeline's YAML-declared steps (one folder per step).
    steps: ModuleType

    @cached_property
    def assets(self) -> list[AssetsDefinition]:
        return [a for a in load_assets_from_modules(list(self.stages)) if isinstance(a, AssetsDefinition)]

    @cached_property
    def asset_checks(self) -> list[AssetChecksDefinition]:
        return list(load_asset_checks_from_modules(list(self.stages)))

    def selection(self) -> AssetSelection:
        return AssetSelection.groups(*self.groups)

    def check_groups(self, assets: list[AssetsDefinition]) -> None:
        """Every asset of this pipeline (Python-declared or a step) sits in a declared group."""
        for asset in assets:
            for key, group in asset.group_names_by_key.items():
                if group not in self.groups:
                    raise ValueError(
                        f"asset {key.to_user_string()} is in group {group!r}, which the {self.name} pipeline "
                        f"does not declare (assets/{self.name}/__init__.py declares {', '.join(self.groups)})"
                    )
