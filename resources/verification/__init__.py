"""The verification library: how a sentence is checked against the index (candidates,
features, the fitted decision and its calibration files, the model judges that must prove
themselves first), and how the decision is fitted on labelled claims (`fitting`). Assets,
the `fact-check` and `calibrate` commands and the evaluation all verify through it."""

import hashlib
from pathlib import Path

HERE = Path(__file__).parent
TEXT_CODE = HERE.parent / "documents" / "text.py"
# How a calibration is fitted decides no verdict: the calibration files it writes do, and count.
FITTING = HERE / "fitting"


def verifier_version() -> str:
    """A hash of this library's code, prompts and calibration files and of the text code it
    splits sentences with: any change re-verifies every claim."""
    verdict_files = [p for p in HERE.rglob("*") if p.is_file() and p.suffix != ".pyc" and FITTING not in p.parents]
    files = sorted(verdict_files) + [TEXT_CODE]
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(HERE.parent)).encode() + path.read_bytes())
    return digest.hexdigest()[:12]
