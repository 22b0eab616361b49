"""Which calibration a fit writes, and where: the file the verifier then loads for those models.

A calibration is keyed by the fingerprint of the models it was fitted for; the bundled default
(`calibration/fact_check.json`) is the embedded models'. The calibration a fit replaced is kept
beside the labelled data, so that the "previous verifier" figures stay reproducible.
"""

from __future__ import annotations

from pathlib import Path

from resources.verification.claim_verification import (
    CALIBRATION_FILE,
    Calibration,
    calibration_path,
    model_fingerprint,
)
from resources.verification.fitting.calibration_report import CalibrationReport


def load_previous(path: Path, model_id: str) -> Calibration | None:
    """The calibration the shipped one replaced, when it was fitted for this embedding model."""
    if not path.exists():
        return None
    previous = Calibration.model_validate_json(path.read_text())
    return previous if previous.fingerprint == model_fingerprint(model_id) else None


def judge_decision(calibration: Calibration) -> str:
    """One line saying whether the judge will count, since only a judge that helped is used as a feature."""
    return f"judge decision: {calibration.judge_reason}"


def calibration_to_write(report: CalibrationReport) -> tuple[Calibration | None, str]:
    """What `calibrate --write` writes, or None and why nothing.

    A judge calibration is written only when the judge helped on the held-out sets: written, it
    would be loaded for this judge's fingerprint and its classifier needs the judge's answer. When
    the judge did not help, nothing is written, not even the judge-free calibration fitted beside
    it: that one is keyed by another fingerprint (the embedder alone), the verifier with this judge
    never loads it (it keeps the bundled default and checks the judge on the sample), and
    `calibrate --write` without `--judge` writes it when that is what is wanted. An earlier file for
    this fingerprint is left as it is, and named with whether the verifier uses it.
    """
    calibration = report.judge_calibration
    if calibration is None:
        return report.calibration, ""
    if calibration.judge_helps:
        return calibration, ""
    why = "not written: a judge calibration whose judge does not help is never used"
    earlier = calibration_path(calibration.fingerprint)
    if earlier.exists():
        kept = Calibration.model_validate_json(earlier.read_text())
        use = (
            "still used, as it records that its judge helped; delete it to stop"
            if kept.judge and kept.judge_helps
            else "not used, as it does not record that its judge helps"
        )
        why += f"; the earlier {earlier} is {use}"
    return None, why


def write_calibration(calibration: Calibration, bundled: bool = False) -> Path:
    """Write under the fingerprint's file name; `bundled` also makes it the default (embedded models
    only, so never a judge calibration: the embedded model is never a judge)."""
    if bundled and calibration.judge:
        raise ValueError("the bundled default is never a judge calibration")
    path = CALIBRATION_FILE if bundled else calibration_path(calibration.fingerprint)
    path.write_text(calibration.model_dump_json(indent=1) + "\n")
    return path
