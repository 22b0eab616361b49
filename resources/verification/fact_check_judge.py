"""The fact-check judge proves itself before its answer counts.

A model judge is only as good as its model: a small one "refutes" a claim by quoting the very
sentence that states it. So the first time a judge model checks facts, it answers a committed
sample of labelled public claims (`calibration/fact_check_judge_sample.jsonl`, FRANK), and its
answers are combined with the classifier's decision in each way they could count: not at all,
only to support, only to refute, or both. The judge counts only in the configuration that beats
the classifier alone on the sample by `JUDGE_MARGIN` in balanced accuracy; otherwise its verdict
is recorded on every row and decides nothing. The measurement is kept as every judge's is
(`resources.verification.judge_calibration`: keyed by the judge's fingerprint, here with the embedder and the
sample's hash, in the response cache's database), so it is paid once per judge model.

The classifier's side of the measurement (the features of each sample claim against its
evidence) depends only on the embedding model and the feature code, so it ships with the sample
for the bundled embedder (`calibration/fact_check_judge_features.json`): a run then pays only
the judge's answers, never the embedding of the sample. Another embedder, or changed feature
code, measures them afresh.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Collection, Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, Field

import resources.verification.claim_features
from resources import EmbeddingsResource
from resources.gateway.config import GatewayConfig
from resources.verification.claim_features import (
    Candidate,
    ClaimFeatures,
    Passage,
    candidate_vectors,
    candidates_of,
    claim_features,
    sentences_to_embed,
)
from resources.verification.judge_calibration import balanced_accuracy, calibration_store, judge_fingerprint

CALIBRATION_DIR = Path(__file__).parent / "calibration"
JUDGE_SAMPLE = CALIBRATION_DIR / "fact_check_judge_sample.jsonl"
SAMPLE_FEATURES = CALIBRATION_DIR / "fact_check_judge_features.json"
# How much better than the classifier alone a judge must be on the sample to count: with 48
# claims, one claim either way moves balanced accuracy by about 0.04, so a smaller gain is noise.
JUDGE_MARGIN = 0.05
JudgeMode = Literal["none", "support", "refute", "overrule"]
MODES: tuple[JudgeMode, ...] = ("support", "refute", "overrule")


class SampleClaim(BaseModel):
    """One labelled claim of the calibration sample, with the evidence the judge reads."""

    id: str
    claim: str = Field(min_length=1)
    evidence: str = Field(min_length=1)
    label: Literal["supported", "unsupported"]


class JudgeCalibration(BaseModel):
    """What the judge measured on the sample, and how its answer counts as a result."""

    fingerprint: str
    sample_hash: str
    claims: int = 0
    mode: JudgeMode = "none"
    classifier_accuracy: float = Field(default=0.0, description="Balanced accuracy of the classifier alone.")
    judge_accuracy: float = Field(
        default=0.0, description="Balanced accuracy of the judge's verified verdict alone (supported vs not)."
    )
    accuracy_by_mode: dict[str, float] = Field(default_factory=dict)
    verified_answers: int = Field(default=0, description="Answers whose quote was found in the evidence.")
    discarded_refutations: int = Field(default=0, description="Refutations whose quote states the claim.")
    failed_answers: int = Field(
        default=0, description="Requests that got no valid answer; such a measurement is not cached."
    )
    reason: str = ""

    @property
    def counts(self) -> bool:
        return self.mode != "none"


def load_sample(path: Path = JUDGE_SAMPLE) -> list[SampleClaim]:
    return [SampleClaim.model_validate_json(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def sample_hash(path: Path = JUDGE_SAMPLE) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def stored_calibration(
    config: GatewayConfig, embedding_model: str, measure: Callable[[str, str], JudgeCalibration]
) -> JudgeCalibration:
    """The judge's measurement on the sample: the stored one when this judge (the strong tier's
    chain) with this embedder measured this sample before, else `measure(fingerprint, sample hash)`,
    kept unless some requests got no answer (a measurement cut short is taken again next run)."""
    fingerprint = f"{judge_fingerprint(config, 'strong')}+{embedding_model}"
    sample = sample_hash()
    key = hashlib.sha256(f"fact_check_judge\n{fingerprint}\n{sample}".encode()).hexdigest()[:24]
    store = calibration_store(config)
    known = store.get(key, JudgeCalibration) if store is not None else None
    if known is not None:
        return known
    measured = measure(fingerprint, sample)
    if store is not None and not measured.failed_answers:
        store.put(key, measured)
    return measured


class SampleFeatures(BaseModel):
    """The sample's claim features as one embedding model and one version of the feature code gave them."""

    embedding_model: str
    features_version: str
    sample_hash: str
    features: list[ClaimFeatures]


def features_version() -> str:
    """A hash of the feature code: stored features are only used with the code that measured them."""
    return hashlib.sha256(Path(resources.verification.claim_features.__file__).read_bytes()).hexdigest()[:12]


def embedded_evidence(
    embeddings: EmbeddingsResource, evidence: Mapping[str, str]
) -> tuple[dict[str, list[Candidate]], dict[str, np.ndarray]]:
    """Each evidence text (by id) cut into candidates as the verifier cuts passages, and every
    candidate sentence embedded once in passage mode: labelled claims share their evidence, and
    the sample and the benchmark harness must measure a claim exactly as the verifier does."""
    candidates = {key: candidates_of([Passage(chunk_id=key, text=text)]) for key, text in evidence.items()}
    sentences = list(dict.fromkeys(t for found in candidates.values() for t in sentences_to_embed(found)))
    return candidates, dict(zip(sentences, embeddings.embed_passages(sentences)))


def measure_features(embeddings: EmbeddingsResource, items: Sequence[SampleClaim]) -> list[ClaimFeatures]:
    """Each sample claim's features against its evidence, as the verifier measures a claim against passages."""
    candidates, vectors = embedded_evidence(embeddings, {i.id: i.evidence for i in items})
    claims = embeddings.embed_queries([i.claim for i in items])
    return [
        claim_features(item.claim, vector, candidates[item.id], candidate_vectors(candidates[item.id], vectors))
        for item, vector in zip(items, claims)
    ]


def sample_features(embeddings: EmbeddingsResource, items: Sequence[SampleClaim]) -> list[ClaimFeatures]:
    """The stored features when they were measured by this embedder and feature code, else measured now."""
    if SAMPLE_FEATURES.exists():
        stored = SampleFeatures.model_validate_json(SAMPLE_FEATURES.read_text())
        if (stored.embedding_model, stored.features_version, stored.sample_hash) == (
            embeddings.model_id,
            features_version(),
            sample_hash(),
        ) and len(stored.features) == len(items):
            return stored.features
    return measure_features(embeddings, items)


def write_sample_features(embeddings: EmbeddingsResource) -> Path:
    """Stores the sample's features for `embeddings` (the bundled embedder's are committed)."""
    stored = SampleFeatures(
        embedding_model=embeddings.model_id,
        features_version=features_version(),
        sample_hash=sample_hash(),
        features=measure_features(embeddings, load_sample()),
    )
    SAMPLE_FEATURES.write_text(stored.model_dump_json() + "\n")
    return SAMPLE_FEATURES


def judged(supported: bool, judge: float, may_raise: bool, mode: JudgeMode) -> bool:
    """The decision once the judge's verified answer (+1 supported, -1 refuted, 0 none) counts as
    `mode` says. It can raise a claim only when the evidence holds every number, date and name
    of the claim (`may_raise`), so a judge fooled into "supported" cannot pass those."""
    if judge > 0 and mode in ("support", "overrule") and may_raise:
        return True
    if judge < 0 and mode in ("refute", "overrule"):
        return False
    return supported


def choose_mode(
    gold: Sequence[bool],
    classifier: Sequence[bool],
    judge: Sequence[float],
    may_raise: Sequence[bool],
    margin: float = JUDGE_MARGIN,
) -> tuple[JudgeMode, dict[str, float], str]:
    """The configuration in which the judge's answer counts (the best one that beats the classifier
    alone by `margin`; the fewest powers on a tie), each configuration's balanced accuracy, and why."""
    alone = balanced_accuracy(gold, classifier)
    figures = {"none": round(alone, 3)}
    for mode in MODES:
        decisions = [judged(s, j, r, mode) for s, j, r in zip(classifier, judge, may_raise)]
        figures[mode] = round(balanced_accuracy(gold, decisions), 3)
    best = max(MODES, key=lambda m: (figures[m], -MODES.index(m)))
    if figures[best] >= alone + margin:
        return best, figures, f"{best}: {figures[best]:.3f} against {alone:.3f} for the classifier alone"
    return (
        "none",
        figures,
        f"unproven: at best {figures[best]:.3f} ({best}) against {alone:.3f} for the classifier alone "
        f"(a gain of {margin} is needed); its verdict is recorded, not counted",
    )


def judge_gain(
    with_judge: Mapping[str, float],
    without_judge: Mapping[str, float],
    excluded: Collection[str] = (),
    margin: float = JUDGE_MARGIN,
) -> tuple[bool, str]:
    """Whether the judge helps a verifier fitted with it as a feature, and why: verifier + judge
    must beat the verifier alone on the same claims, averaged over the held-out sets both were
    measured on, by the margin a judge must beat the classifier by on the sample. `excluded` sets
    (kept unseen by every choice) are left out of the average, so choosing the judge never looks
    at them."""
    names = [name for name in with_judge if name in without_judge and name not in excluded]
    if not names:
        return False, "unproven: no held-out set was judged"
    judged = sum(with_judge[n] for n in names) / len(names)
    alone = sum(without_judge[n] for n in names) / len(names)
    figures = (
        f"{judged:.3f} with the judge against {alone:.3f} for the verifier alone on the same claims, "
        f"mean over {', '.join(names)}"
    )
    if round(judged - alone, 6) >= margin:
        return True, f"helps: {figures}"
    return False, f"unproven: {figures}; a gain of {margin} is needed"
