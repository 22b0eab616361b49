"""One check verdict as `ai-pipelines check` reports it: a case.

A case is what reports render and what a baseline is compared by, so it has its own home:
`check_reports` renders cases and `check_baselines` compares two runs' cases, and neither
depends on the other's concerns.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, JsonValue

CaseStatus = Literal["passed", "failed", "warning", "skipped"]


class CheckCase(BaseModel):
    """One check's verdict (for one partition when Dagster evaluated it per partition)."""

    asset: str
    check: str
    partition: str | None = None
    status: CaseStatus
    blocking: bool  # ERROR severity on a blocking check: a failure stops downstream assets and fails the build
    check_description: str = ""  # what the check asserts (its AssetCheckSpec description)
    result_description: str = ""  # what this evaluation found
    metadata: dict[str, JsonValue] = {}  # what the check recorded, as JSON values
    failing_partitions: list[str] = []  # partitions named in the failing rows of a whole-table evaluation

    @property
    def name(self) -> str:
        return f"{self.check}[{self.partition}]" if self.partition is not None else self.check

    @property
    def label(self) -> str:
        return f"{self.asset}:{self.name}"

    @property
    def evaluated(self) -> bool:
        return self.status != "skipped"

    @property
    def details(self) -> str:
        """The evaluation's description, failing partitions and metadata as plain text."""
        lines = [self.result_description] if self.result_description else []
        if self.failing_partitions:
            lines.append(f"failing partitions: {', '.join(self.failing_partitions)}")
        for key, value in self.metadata.items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            lines.append(f"{key}:\n{text}" if "\n" in text else f"{key}: {text}")
        return "\n".join(lines)
