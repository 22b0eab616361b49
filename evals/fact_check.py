"""The fact-checker measured on public human-labelled data, offline, from committed files.

`python -m evals.fact_check` (or `make eval-factcheck`) reads the labelled claim sets
under tests/data/factcheck/ and:
1. chooses the classifier family (one classifier, or a gate with an expert per kind of summary
   sentence), its features, L2 penalty, monotone constraint and operating points by
   cross-validation grouped by article on the public fit sets alone, catching at least
   `RECALL_FLOOR` of the unsupported sentences of each where it can (`--cross-validation-only`
   prints that table and scores no held-out set); our dev claims weigh 1 a claim in the fits and
   nothing in any choice;
2. fits on all the fit data with that choice, Platt-scales each expert;
3. prints balanced accuracy and recall on unsupported sentences on each held-out set (and the
   unseen one), per claim and per summary, for the one-feature baseline (max cosine to a source
   sentence, its threshold fitted on the same data by the same rule), the verifier fitted here
   (the embedded default it ships), the verifier it replaced, optionally (`--v1`) the first
   verifier, and optionally (`--judge`) the verifier with a configured endpoint as judge.

Each claim's evidence is its whole article (the benchmark pairs one article with each summary).
Sentence vectors are cached under `<data dir>/cache/embeddings-<model>.npz` (never committed), so
only the first run embeds (minutes); later runs take about a minute. `--no-cache` bypasses it.
The fit is the one `ai-pipelines calibrate` runs (ai_pipelines/calibration.py, on the
verification library's `fitting` package); this module adds the first verifier, the printed
report and the command line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Sequence

# First of the project's modules: it keeps Dagster's notices about its beta APIs, raised when the
# asset modules are imported, off the terminal (see the module).
import ai_pipelines.library_warnings  # noqa: F401

# isort: split
from ai_pipelines.calibration import DATA_DIR, CalibrationRun, cross_validate, require_labelled_sets, run_calibration
from ai_pipelines.corpus_fact_check import corpus_verifier
from ai_pipelines.definitions import build_resources
from ai_pipelines.settings import Settings
from evals.first_verifier import first_verifier_decisions
from resources import EmbeddingsResource
from resources.verification.claim_verification import read_claims
from resources.verification.fitting.calibration_report import CalibrationReport
from resources.verification.fitting.configurations import EXPERT_KINDS, Choice
from resources.verification.fitting.cross_validation import CV_FOLDS, CV_REPEATS
from resources.verification.fitting.embedding_cache import CachedEmbeddings, default_cache_path
from resources.verification.fitting.labelled_sets import FIT_SETS, HELDOUT_SETS, load_set
from resources.verification.fitting.objective import RECALL_FLOOR
from resources.verification.judge_calibration import balanced_accuracy


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.fact_check", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA_DIR), help="Folder with the labelled claim sets (JSONL).")
    parser.add_argument(
        "--articles", type=int, default=None, help="Use only the first N articles of each set (a quick sample)."
    )
    parser.add_argument(
        "--v1",
        action="store_true",
        help="Also measure verifier v1 (embeds every article sentence a second time, in query mode).",
    )
    parser.add_argument(
        "--judge",
        action="store_true",
        help="Also run the configured endpoint's strong tier as judge, on a sample (never the embedded model).",
    )
    parser.add_argument(
        "--judge-claims", type=int, default=12, help="Claims per set sent to the judge (half of each label)."
    )
    parser.add_argument(
        "--no-dev",
        action="store_true",
        help="Skip our paraphrased dev claims (weight 1 a claim in the fit, outside every choice, reported apart).",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="Embed everything again instead of reading <data dir>/cache/embeddings-*.npz.",
    )
    parser.add_argument("--json", default="", help="Also write the full report (JSON) here.")
    parser.add_argument(
        "--cross-validation-only",
        action="store_true",
        help="Only the model selection on the fit data: no held-out set is scored.",
    )
    args = parser.parse_args(argv)
    run = CalibrationRun(
        data_dir=Path(args.data),
        articles=args.articles,
        judge_claims=args.judge_claims,
        progress=True,
        dev=not args.no_dev,
        cache=not args.no_cache,
    )
    if args.cross_validation_only:
        print_selection(*cross_validate(run))
        return 0
    if args.judge:
        run.judge_model = build_resources(Settings())["model"]
        if not run.judge_model.base_url:
            parser.error(
                "--judge needs a configured endpoint (AI_PIPELINES_LLM_BASE_URL): the embedded model is never a judge"
            )
    report = evaluate_with_first_verifier(run) if args.v1 else run_calibration(run)
    print_report(report)
    if args.json:
        Path(args.json).write_text(report.model_dump_json(indent=2) + "\n")
    return 0


def evaluate_with_first_verifier(run: CalibrationRun) -> CalibrationReport:
    """The evaluation with v1's figure on each held-out set. v1 decides first, with the embedder the
    run then uses, so the claims are embedded once (on disk, or in memory with `--no-cache`)."""
    started = time.monotonic()
    require_labelled_sets(run.data_dir, run.dev)
    bundled = EmbeddingsResource()
    path = default_cache_path(bundled.model_id) if run.cache else None
    embeddings = CachedEmbeddings(**bundled.model_dump(), cache_path=str(path or ""))
    first: dict[str, float] = {}
    for name in HELDOUT_SETS:
        records = load_set(run.data_dir, name, run.articles)
        decisions = first_verifier_decisions(records, embeddings)
        embeddings.save()
        pairs = [(r.label == "supported", d) for r, d in zip(records, decisions) if r.labelled]
        first[name] = round(balanced_accuracy([g for g, _ in pairs], [d for _, d in pairs]), 3)
        print(f"verifier v1 on {name}: {len(records)} claims ({time.monotonic() - started:.0f}s)", flush=True)
    report = run_calibration(run.model_copy(update={"embeddings": embeddings}))
    for figures in report.sets:
        figures.v1 = first[figures.name]
    report.seconds = round(time.monotonic() - started, 1)
    return report


def evaluate_on_corpus(settings: Settings, corpus: Path, dev_set: Path) -> tuple[float, float]:
    """Accuracy over three labels, and balanced accuracy of supported vs not, on a labelled claims
    file, through the `fact-check` command's path (the corpus indexed, the shipped calibration)."""
    rows = [json.loads(line) for line in dev_set.read_text().splitlines() if line.strip()]
    verdicts = corpus_verifier(settings, corpus, use_model=False).verify(read_claims(dev_set))
    gold, predicted = [r["label"] for r in rows], [v.verdict for v in verdicts]
    accuracy = sum(g == p for g, p in zip(gold, predicted)) / len(gold)
    return accuracy, balanced_accuracy([g == "supported" for g in gold], [p == "supported" for p in predicted])


def describe_family(choice: Choice) -> str:
    if choice.family == "gated":
        return f"gated ({' / '.join(EXPERT_KINDS)} experts; gate on '{choice.gate_features}')"
    return "single"


def print_report(report: CalibrationReport) -> None:
    choice, point = report.choice, report.operating_point
    print(
        f"\nChosen by {CV_FOLDS}-fold cross-validation grouped by article (x{CV_REPEATS}) on the fit sets "
        f"({', '.join(FIT_SETS)}): {describe_family(choice)}, features '{choice.feature_set}', l2 {choice.l2:g}, "
        f"monotone {choice.monotone}; operating points {' / '.join(f'{t:.2f}' for t in point.thresholds)}; "
        f"CV balanced accuracy {point.cv.objective:.3f} "
        f"({', '.join(f'{k} {v:.3f}' for k, v in point.cv.per_dataset.items())}), "
        f"CV recall on unsupported {point.cv.unsupported_recall:.3f} "
        f"({', '.join(f'{k} {v:.3f}' for k, v in point.cv.unsupported_recall_per_dataset.items())}; floor {RECALL_FLOOR})"
    )
    print(
        f"\nBalanced accuracy per claim on the held-out sets ({report.fingerprint}; baseline threshold "
        f"{report.baseline_threshold}, fitted on the same data; {report.seconds}s)\n"
    )
    print(report.table())
    print("\nPer summary (accepted when all its sentences are; label: every sentence correct)\n")
    print(report.summary_table())
    if report.dev is not None:
        dev = report.dev
        previous = f"; previous verifier {dev.previous_balanced_accuracy:.3f}" if dev.previous_balanced_accuracy else ""
        print(
            f"\nOur {dev.claims} paraphrased dev claims (weight 1 a claim, outside the objective): out of fold, balanced "
            f"accuracy {dev.cross_validated}, recall on unsupported {dev.cross_validated_unsupported_recall}; as fitted, "
            f"balanced accuracy {dev.balanced_accuracy:.3f}, three-label accuracy {dev.accuracy_3_labels:.3f}, recall on "
            f"unsupported {dev.unsupported_recall:.3f}{previous}"
        )
    if report.judge_calibration is not None:
        print("\nWith the judge, on a fixed sample per set\n")
        print(report.judge_table())
    print(f"\nfitted on: {report.calibration.fit_set}; on that data: {report.calibration.fitted}")


def print_selection(choice: Choice, tried: Sequence[Choice]) -> None:
    """Every configuration cross-validated on the fit sets, and the one chosen."""
    sets = sorted(tried[0].cv_per_dataset) if tried else []
    print(
        "\n| family | features | l2 | monotone | CV balanced accuracy (mean) | "
        + " | ".join(sets)
        + " | CV recall on unsupported (lowest) | thresholds |\n|---|---|---|---|---|"
        + "---|" * len(sets)
        + "---|---|"
    )
    for c in tried:
        per = " | ".join(f"{c.cv_per_dataset[k]:.3f}" for k in sets)
        print(
            f"| {describe_family(c)} | {c.feature_set} | {c.l2:g} | {c.monotone} | {c.cv:.3f} | {per} "
            f"| {c.cv_unsupported_recall:.3f} | {' / '.join(f'{t:.2f}' for t in c.thresholds)} |"
        )
    print(f"\nchosen: {choice}")


if __name__ == "__main__":
    raise SystemExit(main())
