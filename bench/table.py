"""What every scenario reports: rows of one table, and the failures that void it.

A scenario returns `Row`s (a measured figure, what it is compared with, the ratio, and
the target it is held to) or raises `BenchmarkFailed` with the reason; the command
prints the table and exits non-zero if any scenario failed, so a number from a run
that failed is never printed as a result.
"""

from __future__ import annotations

import argparse
import operator
import sys
from typing import Callable, Literal

from pydantic import BaseModel

Bound = Literal["<=", ">="]
_HOLDS = {"<=": operator.le, ">=": operator.ge}


class BenchmarkFailed(RuntimeError):
    """A run inside a scenario failed, or made a different number of model calls than expected."""


def measurement_parser(doc: str | None, size: str, **size_options: object) -> argparse.ArgumentParser:
    """The arguments of every child measurement (`python -m bench.<scenario>`): its size
    (`--documents`, `--tickets`), the test server's latency and the calls in flight."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument(size, type=int, **size_options)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=16)
    return parser


def print_measurement(measure: Callable[[], BaseModel]) -> int:
    """The `main` of a measurement run as a child process: its JSON on stdout and exit 0, or
    `benchmark failed: <reason>` on stderr and exit 1 (the parent shows that line)."""
    try:
        measured = measure()
    except BenchmarkFailed as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print(measured.model_dump_json())
    return 0


class Row(BaseModel):
    scenario: str
    measure: str  # what was measured, e.g. "digest graph, N=500"
    value: str  # the figure with its unit, e.g. "12.3 s"
    baseline: str = ""  # what it is compared with, measured in the same run
    ratio: float | None = None  # value / baseline
    target: str = ""  # the target from the issue, e.g. "<= 1.2"
    met: bool | None = None  # None: no target for this row

    def held_to(self, bound: Bound, limit: float) -> "Row":
        """This row with its ratio held to `bound limit`: the target shown and whether it was
        met come from the one comparison, so the table cannot say one thing and judge another."""
        if self.ratio is None:
            raise ValueError(f"{self.measure}: a row without a ratio has no target to be held to")
        return self.model_copy(update={"target": f"{bound} {limit:g}", "met": _HOLDS[bound](self.ratio, limit)})


def render(rows: list[Row]) -> str:
    """A Markdown table, so the same text goes to the terminal and to BENCHMARKS.md."""
    header = ["scenario", "measure", "value", "compared with", "ratio", "target", "met"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        met = "" if row.met is None else ("yes" if row.met else "**no**")
        lines.append(
            f"| {row.scenario} | {row.measure} | {row.value} | {row.baseline} | {ratio} | {row.target} | {met} |"
        )
    return "\n".join(lines)


def print_rows(measure: Callable[[], list[Row]]) -> int:
    """The `main` of a scenario run on its own (`python -m bench.<scenario> [size]`): its table on
    stdout and exit 0, or `benchmark failed: <reason>` on stderr and exit 1."""
    try:
        rows = measure()
    except BenchmarkFailed as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    print(render(rows))
    return 0
