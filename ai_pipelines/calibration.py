"""`ai-pipelines calibrate`: the verifier fitted for the configured models on the committed labelled sets.

The sets are files of the repository, not of the installed package: the public ones under
tests/data/factcheck/ (or any folder given with `--data`), our dev claims in
tests/data/fact_check_dev.jsonl. So the command runs from a clone, and says so when they are
missing. The dev claims are scored through the `fact-check` command's own path (the sample
corpus indexed, the real `ClaimVerifier`), since they stand for what the pipeline publishes.
Sentence vectors are cached under `<data dir>/cache/`, so only the first run embeds (minutes).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

from pydantic import BaseModel, ConfigDict

from ai_pipelines.corpus_fact_check import corpus_verifier
from ai_pipelines.definitions import build_resources
from ai_pipelines.settings import Settings
from resources import EmbeddingsResource, ModelResource
from resources.pipeline_config import SAMPLE_CORPUS_DIR
from resources.verification.claim_verification import read_claims
from resources.verification.fitting.calibration_files import load_previous
from resources.verification.fitting.calibration_fit import fit_and_measure, fit_data
from resources.verification.fitting.calibration_report import CalibrationReport
from resources.verification.fitting.configurations import Choice
from resources.verification.fitting.cross_validation import select_model
from resources.verification.fitting.embedding_cache import CachedEmbeddings, cached, default_cache_path
from resources.verification.fitting.labelled_sets import FIT_SETS, HELDOUT_SETS, load_set
from resources.verification.fitting.scoring import DevClaim, Scored, score_records

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "tests" / "data" / "factcheck"
# Our own 60 paraphrased claims about the sample corpus, three labels: the only labelled sample of
# what the pipeline publishes (paraphrases, checked against retrieved passages). Each weighs as much
# as one public claim in the fit and none in the objective, the recall floor or any choice; their
# out-of-fold figure is reported apart. Their three labels also train the classifier that names a
# rejection refuted or not-enough-info.
DEV_SET = ROOT / "tests" / "data" / "fact_check_dev.jsonl"
# The calibration the shipped one replaced, so "previous verifier" stays a reproducible column.
PREVIOUS_CALIBRATION = DATA_DIR / "previous_calibration.json"


class CalibrationRun(BaseModel):
    """What one fit reads and with which models: the sets (`articles`: only the first N articles of
    each), the embedder (default the bundled one), the judge, our dev claims, the vector cache."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    data_dir: Path = DATA_DIR
    embeddings: EmbeddingsResource | None = None
    articles: int | None = None
    judge_model: ModelResource | None = None
    judge_claims: int = 12
    progress: bool = False
    dev: bool = True
    settings: Settings | None = None
    cache: bool = True


class LabelledSetsMissing(FileNotFoundError):
    """The labelled sets are not where the command looks: they ship with the repository, not the package."""


def require_labelled_sets(data_dir: Path, dev: bool) -> None:
    """A clear error before any embedding when the sets (or our dev claims) are not on disk."""
    if not data_dir.is_dir():
        raise LabelledSetsMissing(
            f"no labelled claim sets in {data_dir}: they are committed under tests/data/factcheck/ in the "
            "repository and not installed with the package; run from a clone, or pass --data with a folder of them"
        )
    if dev and not DEV_SET.is_file():
        raise LabelledSetsMissing(
            f"our dev claims are not at {DEV_SET}: they are committed in the repository and not installed with "
            "the package; run from a clone"
        )


def run_calibration(run: CalibrationRun) -> CalibrationReport:
    """Score every fit and held-out set (and our dev claims), then fit and measure the calibration."""
    started = time.monotonic()
    say = _progress(run.progress, started)
    embeddings, cache_path = _embeddings(run)
    scored, dev_claims = _score(run, (*FIT_SETS, *HELDOUT_SETS), embeddings, cache_path, say)
    return fit_and_measure(
        scored,
        dev_claims,
        embeddings.model_id,
        previous=load_previous(PREVIOUS_CALIBRATION, embeddings.model_id),
        judge_model=run.judge_model,
        judge_claims=run.judge_claims,
        dev_set=DEV_SET.name,
        say=say,
        started=started,
    )


def cross_validate(run: CalibrationRun) -> tuple[Choice, list[Choice]]:
    """The model selection alone: scores the fit sets (and our dev claims), never a held-out set."""
    started = time.monotonic()
    say = _progress(run.progress, started)
    embeddings, cache_path = _embeddings(run)
    scored, dev_claims = _score(run, FIT_SETS, embeddings, cache_path, say)
    choice, tried = select_model(fit_data(scored, dev_claims))
    say(f"model selection: {len(tried)} configurations cross-validated on the fit sets")
    return choice, tried


def calibrate(
    settings: Settings,
    data_dir: Path = DATA_DIR,
    judge: bool = False,
    articles: int | None = None,
    judge_claims: int = 40,
) -> CalibrationReport:
    """Fit the classifier for the configured embedding model (and judge, with `judge`) on the public fit sets.
    A judge must be a configured endpoint: the embedded model is never a judge, so a calibration
    fitted with it would never be used, and its answers are not worth the minutes they take."""
    resources = build_resources(settings)
    if judge and not resources["model"].base_url:
        raise ValueError(
            "--judge needs a configured endpoint (AI_PIPELINES_LLM_BASE_URL): the embedded model is never a judge"
        )
    return run_calibration(
        CalibrationRun(
            data_dir=data_dir,
            embeddings=resources["vector_store"].embeddings,
            articles=articles,
            judge_model=resources["model"] if judge else None,
            judge_claims=judge_claims,
            progress=True,
            settings=settings,
        )
    )


def score_dev(settings: Settings | None = None, cache: Path | None = None) -> list[DevClaim]:
    """Features of the dev-set claims against the sample corpus, through the real `ClaimVerifier` (retrieval included)."""
    rows = [json.loads(line) for line in DEV_SET.read_text().splitlines() if line.strip()]
    verifier = corpus_verifier(settings or Settings(), SAMPLE_CORPUS_DIR, use_model=False)
    embeddings = cached(verifier.vector_store.embeddings, cache)
    verifier.vector_store = verifier.vector_store.model_copy(update={"embeddings": embeddings})
    features = verifier.features(read_claims(DEV_SET))
    if isinstance(embeddings, CachedEmbeddings):
        embeddings.save()
    return [
        DevClaim(label=row["label"], features=f, source=row.get("source", row["id"])) for row, f in zip(rows, features)
    ]


def _embeddings(run: CalibrationRun) -> tuple[EmbeddingsResource, Path | None]:
    """The run's embedder, behind the vector cache unless `cache` is off (an embedder that is
    already a cache is used as it is)."""
    embeddings = run.embeddings or EmbeddingsResource()
    data_dir = run.settings.data_dir if run.settings is not None else None
    cache_path = default_cache_path(embeddings.model_id, data_dir) if run.cache else None
    return cached(embeddings, cache_path), cache_path


def _score(
    run: CalibrationRun,
    names: Sequence[str],
    embeddings: EmbeddingsResource,
    cache_path: Path | None,
    say: Callable[[str], None],
) -> tuple[dict[str, list[Scored]], list[DevClaim]]:
    require_labelled_sets(run.data_dir, run.dev)
    scored: dict[str, list[Scored]] = {}
    for name in names:
        scored[name] = score_records(load_set(run.data_dir, name, run.articles), embeddings)
        if isinstance(embeddings, CachedEmbeddings):
            embeddings.save()
        say(f"scored {name}: {len(scored[name])} claims")
    dev_claims = score_dev(run.settings, cache_path) if run.dev else []
    if run.dev:
        say(f"scored the dev set: {len(dev_claims)} claims (weight 1 each, outside the objective)")
    return scored, dev_claims


def _progress(shown: bool, started: float) -> Callable[[str], None]:
    def say(message: str) -> None:
        if shown:
            print(f"{message} ({time.monotonic() - started:.0f}s)", flush=True)

    return say
