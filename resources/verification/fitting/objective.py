"""What a fit is judged by: balanced accuracy per public dataset, averaged, with recall on unsupported sentences first.

Each public fit set counts equally, and within it each label, whatever its size or balance; our
dev claims weigh 1 a claim in a fit and nothing in the objective.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import numpy as np
from pydantic import BaseModel, Field

from resources.verification.fact_check_judge import balanced_accuracy
from resources.verification.fitting.labelled_sets import DEV_DATASET

# Candidates (and operating points) within this much of the best objective count as tied; a tie
# goes to the higher recall on unsupported sentences: a wrong sentence published costs more than
# a right one withheld.
TIE = 0.005
# The share of unsupported sentences the shipped operating point must catch in every fit dataset,
# as far as any threshold can: a wrong sentence published costs more than a right one withheld.
RECALL_FLOOR = 0.70


class FitData(BaseModel):
    """Labelled feature rows, their cross-validation group (an article) and the dataset each came from."""

    rows: list[dict[str, float]]
    gold: list[bool]
    groups: list[str]
    datasets: list[str] = Field(default_factory=list, description="Empty: one dataset.")

    def dataset_of(self, index: int) -> str:
        return self.datasets[index] if self.datasets else ""

    def subset(self, index: Sequence[int]) -> FitData:
        return FitData(
            rows=[self.rows[i] for i in index],
            gold=[self.gold[i] for i in index],
            groups=[self.groups[i] for i in index],
            datasets=[self.dataset_of(i) for i in index] if self.datasets else [],
        )

    def public(self, name: str) -> bool:
        """Whether a dataset is public data the objective is measured on (our dev claims are not)."""
        return name != DEV_DATASET

    def weights(self) -> list[float]:
        """Sample weights that give every public (dataset, label) cell the same total, so each public
        dataset counts equally and within it each label, whatever its size or balance; a public
        claim weighs 1 on average. Each of our dev claims weighs 1: it may inform, never dominate."""
        cells = Counter((self.dataset_of(i), g) for i, g in enumerate(self.gold) if self.public(self.dataset_of(i)))
        public = sum(cells.values())
        return [
            public / (len(cells) * cells[(self.dataset_of(i), g)]) if self.public(self.dataset_of(i)) else 1.0
            for i, g in enumerate(self.gold)
        ]


class Figures(BaseModel):
    """Balanced accuracy (mean over datasets, each dataset's own) and recall on unsupported sentences."""

    objective: float
    per_dataset: dict[str, float]
    unsupported_recall: float
    unsupported_recall_per_dataset: dict[str, float] = Field(default_factory=dict)
    public: list[str] = Field(default_factory=list, description="The datasets the objective and floor are over.")

    @property
    def floor_recall(self) -> float:
        """The lowest recall on unsupported sentences over the public datasets: what the recall floor is held to."""
        held = [v for k, v in self.unsupported_recall_per_dataset.items() if not self.public or k in self.public]
        return min(held, default=self.unsupported_recall)


def figures(data: FitData, predicted: Sequence[bool]) -> Figures:
    """The objective: balanced accuracy per dataset, averaged, so CNN/DM and XSum count alike."""
    gold, decided = np.asarray(data.gold, dtype=bool), np.asarray(predicted, dtype=bool)
    datasets = np.asarray(data.datasets or [""] * len(gold))
    public_rows = np.asarray([data.public(d) for d in datasets.tolist()], dtype=bool)
    per, recall = {}, {}
    for name in sorted(set(datasets.tolist())):
        mask = datasets == name
        per[name] = balanced_accuracy(gold[mask].tolist(), decided[mask].tolist())
        wrong = mask & ~gold
        recall[name] = float((~decided[wrong]).mean()) if wrong.any() else 1.0
    public = [n for n in per if data.public(n)]
    wrong = public_rows & ~gold
    return Figures(
        objective=float(np.mean([per[n] for n in public])),
        per_dataset=per,
        unsupported_recall=float((~decided[wrong]).mean()) if wrong.any() else 1.0,
        unsupported_recall_per_dataset=recall,
        public=public,
    )


def prefer(candidates: Sequence[tuple[Figures, Any]]) -> Any:
    """Among candidates that catch at least `RECALL_FLOOR` of the unsupported sentences of every
    dataset (if none does, those closest to it), the best objective; within `TIE` of it, the
    highest such recall; then the earliest."""
    eligible = [(f, item) for f, item in candidates if f.floor_recall >= RECALL_FLOOR]
    if not eligible:
        highest = max(f.floor_recall for f, _ in candidates)
        eligible = [(f, item) for f, item in candidates if f.floor_recall >= highest - TIE]
    best = max(f.objective for f, _ in eligible)
    close = [(f, item) for f, item in eligible if f.objective >= best - TIE]
    return max(close, key=lambda pair: pair[0].floor_recall)[1]
