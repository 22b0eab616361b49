"""The report of a fit: the configuration chosen, the calibration fitted and its figures per held-out set."""

from __future__ import annotations

from pydantic import BaseModel, Field

from resources.verification.claim_verification import Calibration
from resources.verification.fitting.configurations import Choice, OperatingPoint
from resources.verification.fitting.judged_sample import JudgeStats


class SetFigures(BaseModel):
    """One held-out set: the baseline, the verifier fitted here, the one it replaced, and v1 when measured;
    per claim and per summary."""

    name: str
    claims: int
    supported: int
    baseline: float
    baseline_unsupported_recall: float
    verifier: float = Field(
        description="Balanced accuracy of the verifier fitted here (shipped as the embedded default)."
    )
    unsupported_recall: float
    previous: float | None = Field(default=None, description="The verifier it replaces (its shipped calibration).")
    v1: float | None = Field(default=None, description="The first verifier, when the evaluation measured it.")
    summaries: int = 0
    summaries_supported: int = 0
    summary_baseline: float | None = None
    summary_verifier: float | None = None
    summary_previous: float | None = None
    judged_claims: int = 0
    verifier_on_judged: float | None = None
    verifier_judge: float | None = None
    judge: JudgeStats | None = None
    looked_at_before: bool = False
    unseen: bool = False

    @property
    def margin(self) -> float:
        return self.verifier - self.baseline


class DevFigures(BaseModel):
    """Our own paraphrased claims: out of fold (a test) and as fitted (weight 1 a claim)."""

    claims: int
    cross_validated: float | None = Field(default=None, description="Out-of-fold balanced accuracy.")
    cross_validated_unsupported_recall: float | None = None
    balanced_accuracy: float
    accuracy_3_labels: float
    unsupported_recall: float
    previous_balanced_accuracy: float | None = None


class CalibrationReport(BaseModel):
    """What a fit chose and how the fitted verifier measured on each held-out set: what `calibrate` prints."""

    fingerprint: str
    baseline_threshold: float
    choice: Choice
    operating_point: OperatingPoint
    calibration: Calibration
    judge_calibration: Calibration | None = None
    sets: list[SetFigures]
    dev: DevFigures | None = None
    seconds: float

    def table(self) -> str:
        v1 = any(s.v1 is not None for s in self.sets)
        lines = [
            "| set | claims (supported) | baseline: max cosine | **verifier (shipped)** | its margin "
            "| recall on unsupported (baseline / shipped) | previous verifier |" + (" verifier v1 |" if v1 else ""),
            "|---|---|---|---|---|---|---|" + ("---|" if v1 else ""),
        ]
        for s in self.sets:
            tag = " (looked at before)" if s.looked_at_before else " (unseen)" if s.unseen else " (clean)"
            previous = f"{s.previous:.3f}" if s.previous is not None else "-"
            lines.append(
                f"| {s.name}{tag} | {s.claims} ({s.supported}) | {s.baseline:.3f} | **{s.verifier:.3f}** | {s.margin:+.3f} "
                f"| {s.baseline_unsupported_recall:.3f} / {s.unsupported_recall:.3f} | {previous} |"
                + (f" {s.v1:.3f} |" if v1 and s.v1 is not None else " - |" if v1 else "")
            )
        return "\n".join(lines)

    def summary_table(self) -> str:
        lines = [
            "| set | summaries (fully factual) | baseline | verifier (shipped) | previous verifier |",
            "|---|---|---|---|---|",
        ]
        for s in self.sets:
            if s.summary_verifier is not None:
                previous = f"{s.summary_previous:.3f}" if s.summary_previous is not None else "-"
                lines.append(
                    f"| {s.name} | {s.summaries} ({s.summaries_supported}) | {s.summary_baseline:.3f} | {s.summary_verifier:.3f} | {previous} |"
                )
        return "\n".join(lines)

    def judge_table(self) -> str:
        """Verifier alone and verifier + judge on the same judged claims of each held-out set, side by
        side; an unseen set is shown but marked, since the decision to use the judge leaves it out."""
        lines = [
            "| set | judged claims | verifier on them | verifier + judge | gain | judge's bare verdict | judge verdicts | verified quotes | failed |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in self.sets:
            if s.judge is not None and s.verifier_on_judged is not None and s.verifier_judge is not None:
                verdicts = ", ".join(f"{k} {v}" for k, v in sorted(s.judge.verdicts.items())) or "none"
                name = f"{s.name} (unseen: not in the decision)" if s.unseen else s.name
                bare = f"{s.judge.raw_balanced_accuracy:.3f}" if s.judge.raw_balanced_accuracy is not None else "-"
                lines.append(
                    f"| {name} | {s.judged_claims} | {s.verifier_on_judged:.3f} | {s.verifier_judge:.3f} "
                    f"| {s.verifier_judge - s.verifier_on_judged:+.3f} | {bare} | {verdicts} "
                    f"| {s.judge.verified_quotes} | {s.judge.failed} |"
                )
        return "\n".join(lines)
