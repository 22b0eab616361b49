"""Fact-checking outside the asset graph: any folder of documents, any claims.

It indexes the corpus into its own Chroma collection (named by the corpus content,
so a second run over the same documents re-embeds nothing) and runs the same
`ClaimVerifier` that the `fact_checks` asset uses. Calibration fits the verifier's
classifier for the configured models on the committed FRANK data
(`ai_pipelines.fact_check_eval`) and writes it keyed by the models' fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ai_pipelines.definitions import build_resources
from ai_pipelines.fact_check_eval import DATA_DIR, EvalReport
from ai_pipelines.fact_check_eval import evaluate as evaluate_on_benchmark
from ai_pipelines.settings import Settings
from assets.digest.ingestion import chunk_document, load_corpus
from assets.digest.retrieval import collection_name, sync_index
from resources.verification.claim_verification import (
    CALIBRATION_FILE,
    Calibration,
    ClaimExplanation,
    ClaimVerdict,
    ClaimVerifier,
    calibration_path,
    read_claims,
    read_claims_lenient,
)
from resources.verification.judge_calibration import balanced_accuracy


def corpus_verifier(
    settings: Settings, corpus: Path, use_model: bool = True, calibration: Calibration | None = None
) -> ClaimVerifier:
    if not corpus.is_dir():
        raise FileNotFoundError(f"corpus folder not found: {corpus}")
    documents, quarantined = load_corpus([corpus])
    for bad in quarantined:
        print(f"skipped {bad.path}: {bad.reason}")
    if not documents:
        raise ValueError(f"no readable documents in {corpus}")
    resources = build_resources(settings)
    vector_store = resources["vector_store"]
    pipeline = resources["pipeline"]
    chunks = [c for d in documents for c in chunk_document(d, pipeline.chunk_chars, pipeline.max_chunk_chars)]
    corpus_id = hashlib.sha256("".join(sorted(d.doc_id for d in documents)).encode()).hexdigest()[:12]
    collection = collection_name(f"corpus-{corpus_id}", vector_store.embeddings.model_id)
    sync_index(vector_store, collection, chunks)
    return ClaimVerifier(
        vector_store, collection, model=resources["model"] if use_model else None, calibration=calibration
    )


def fact_check_corpus(
    settings: Settings, corpus: Path, claims_path: Path, use_model: bool = True
) -> list[ClaimVerdict]:
    """Verdicts for a claims file; a malformed line raises an error naming it."""
    return corpus_verifier(settings, corpus, use_model).verify(read_claims(claims_path))


def fact_check_lenient(
    settings: Settings, corpus: Path, claims_path: Path, use_model: bool = True
) -> tuple[list[ClaimVerdict], list[str]]:
    """Verdicts for every well-formed claim, and one error per malformed line: one bad line never stops the others."""
    claims, errors = read_claims_lenient(claims_path)
    return (corpus_verifier(settings, corpus, use_model).verify(claims) if claims else []), errors


def explain_lenient(
    settings: Settings, corpus: Path, claims_path: Path, use_model: bool = True
) -> tuple[list[ClaimExplanation], list[str]]:
    """As `fact_check_lenient`, each verdict inside the explanation of how it was reached."""
    claims, errors = read_claims_lenient(claims_path)
    return (corpus_verifier(settings, corpus, use_model).explain(claims) if claims else []), errors


def calibrate(
    settings: Settings,
    data_dir: Path = DATA_DIR,
    judge: bool = False,
    articles: int | None = None,
    judge_claims: int = 40,
) -> EvalReport:
    """Fit the classifier for the configured embedding model (and judge, with `judge`) on the FRANK fit split.
    A judge must be a configured endpoint: the embedded model is never a judge, so a calibration
    fitted with it would never be used, and its answers are not worth the minutes they take."""
    resources = build_resources(settings)
    if judge and not resources["model"].base_url:
        raise ValueError(
            "--judge needs a configured endpoint (AI_PIPELINES_LLM_BASE_URL): the embedded model is never a judge"
        )
    return evaluate_on_benchmark(
        data_dir,
        embeddings=resources["vector_store"].embeddings,
        articles=articles,
        legacy=False,
        judge_model=resources["model"] if judge else None,
        judge_claims=judge_claims,
        progress=True,
        settings=settings,
    )


def judge_decision(calibration: Calibration) -> str:
    """One line saying whether the judge will count, since only a judge that helped is used as a feature."""
    return f"judge decision: {calibration.judge_reason}"


def calibration_to_write(report: EvalReport) -> tuple[Calibration | None, str]:
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


def evaluate(settings: Settings, corpus: Path, dev_set: Path) -> tuple[float, float]:
    """Accuracy over three labels, and balanced accuracy of supported vs not, on a labelled claims file."""
    rows = [json.loads(line) for line in dev_set.read_text().splitlines() if line.strip()]
    verdicts = corpus_verifier(settings, corpus, use_model=False).verify(read_claims(dev_set))
    gold, predicted = [r["label"] for r in rows], [v.verdict for v in verdicts]
    accuracy = sum(g == p for g, p in zip(gold, predicted)) / len(gold)
    return accuracy, balanced_accuracy([g == "supported" for g in gold], [p == "supported" for p in predicted])
