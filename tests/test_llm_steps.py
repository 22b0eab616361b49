"""LLM steps declared in YAML: a new stage from configuration alone, errors that point at
the file, line and field, and prompt files whose edits mark exactly their dependents stale."""

import importlib
import itertools
import json
import shutil
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
from dagster import AssetKey, AssetSelection, DagsterInstance, Definitions, define_asset_job
from dagster._core.definitions.assets.graph.asset_graph import AssetGraph
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from ai_pipelines import definitions
from ai_pipelines.backfill import run_over_all_documents
from ai_pipelines.definitions import build_definitions, build_resources
from ai_pipelines.settings import Settings
from assets import ALL_ASSETS, STEP_MODULES
from assets.components.llm_step import LlmStep, StepDefinitionError, model_from_json_schema
from assets.digest.signals import SIGNALS, extract_signals
from assets.triage.ticket_routes import ROUTES
from resources.documents.batches import batch_of, batches_of
from tests.conftest import partition_metadata, run_digest_job, warehouse_rows
from tests.fake_openai import FakeOpenAI, Fault

# Every pipeline's declared step folders (assets/<pipeline>/steps/<name>/).
STEP_FOLDERS = sorted(
    (folder for module in STEP_MODULES for folder in Path(module.__file__).parent.iterdir()),
    key=lambda folder: folder.name,
)

# Tiers per test: loading and validating steps is unit; materializing them is integration.

_packages = itertools.count()

GIST_STEP = """\
type: assets.components.llm_step.LlmStep
attributes:
  asset: document_gists
  group: gists
  inputs: [source_documents]
  partitions: document_batches
  prompt: prompt.txt
  output_schema:
    type: object
    properties:
      gist: {type: string, maxLength: 200}
      audience: {type: string, enum: [general, expert]}
  checks:
    - kind: schema_validity
      min_rate: 0.9
      blocking: true
    - kind: rubric
      rubric: The gist is one sentence about the document.
      min_rate: 0.5
      calibration: calibration.jsonl
"""
GIST_PROMPT = (
    "Write a one-sentence gist of this article.\n<title>\n{title}\n</title>\n<document>\n{text}\n</document>\n"
)
_DOCUMENT = {
    "title": "Harbour cranes",
    "text": "The port of Kestrel installed four electric cranes in May 2026. They cut the port's diesel use by a third.",
}
GIST_EXAMPLES = [
    ("good", "good", "The port of Kestrel installed four electric cranes that cut its diesel use."),
    ("good", "good", "An article titled Harbour cranes."),
    ("good", "good", "Kestrel's port cut diesel use by a third with electric cranes."),
    ("bad", "invented_fact", "The port of Kestrel installed nine cranes built by Siemens."),
    ("bad", "wrong_kind", "Did the port of Kestrel cut its diesel use?"),
    ("bad", "off_topic", "Central banks held interest rates steady this month."),
]
GIST_CALIBRATION = "".join(
    json.dumps({"label": label, "kind": kind, "item": _DOCUMENT, "answer": {"gist": gist, "audience": "general"}})
    + "\n"
    for label, kind, gist in GIST_EXAMPLES
)


def gist_folder(step: str = GIST_STEP) -> dict[str, str]:
    return {"defs.yaml": step, "prompt.txt": GIST_PROMPT, "calibration.jsonl": GIST_CALIBRATION}


def step_package(root: Path, folders: dict[str, dict[str, str]]) -> ModuleType:
    """A defs package of step folders (each a `defs.yaml` and its files), importable under a fresh name."""
    name = f"declared_steps_{next(_packages)}"
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for folder, files in folders.items():
        (package / folder).mkdir()
        for file, text in files.items():
            (package / folder / file).write_text(text)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(name)


def located_error(exc: BaseException, yaml_path: Path) -> str:
    """The message that points into the step's file: the step's own validation, or Dagster's
    check of the attributes against the component's fields (unknown fields), each naming
    the file, the line and the field; Dagster wraps either in its component-tree error."""
    cause: BaseException | None = exc
    while cause is not None:
        if str(yaml_path) in str(cause):
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    raise AssertionError(f"no error names {yaml_path}: {exc!r}")


def gist(messages: list[dict[str, str]]) -> dict[str, str]:
    title = messages[0]["content"].split("<title>\n", 1)[1].split("\n", 1)[0]
    return {"gist": f"An article titled {title}.", "audience": "general"}


def run_gists(settings: Settings, package: ModuleType, instance: DagsterInstance):
    defs = build_definitions(settings, step_modules=(*STEP_MODULES, package))
    selection = AssetSelection.assets("document_gists").upstream(depth=1).required_multi_asset_neighbors()
    job = Definitions.merge(defs, Definitions(jobs=[define_asset_job("gists", selection=selection)])).resolve_job_def(
        "gists"
    )
    return run_over_all_documents(job, instance, build_resources(settings)["pipeline"], raise_on_error=False)


@pytest.mark.integration
def test_a_stage_declared_in_yaml_alone_is_materialized_and_its_checks_run(settings, llm: FakeOpenAI, tmp_path):
    package = step_package(tmp_path / "project", {"document_gists": gist_folder()})
    llm.scripts["DocumentGistsAnswer"] = gist
    instance = DagsterInstance.ephemeral()

    result = run_gists(settings, package, instance)

    assert result.success
    rows = warehouse_rows(settings, "document_gists")
    documents = sorted(r["document"] for r in warehouse_rows(settings, "source_documents"))
    assert sorted(r["document"] for r in rows) == documents and len(rows) > 3
    per_batch = partition_metadata(result, "document_gists")
    held = Counter(batch_of(d) for d in documents)
    assert set(held) <= set(per_batch)
    # Each batch's calls: an answer per document, and the judge's verdict on each.
    assert all(per_batch[b]["rows"] == n and per_batch[b]["model_requests"] == 2 * n for b, n in held.items())
    assert all(per_batch[b]["rubric_passed"] == n for b, n in held.items())
    assert all(r["status"] == "valid" and r["gist"].startswith("An article titled") for r in rows)
    gist_calls = [c for c in llm.calls if c["schema"] == "DocumentGistsAnswer"]
    assert len(gist_calls) == len(rows)
    assert all("<document>" in c["messages"][0]["content"] for c in gist_calls)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["schema_validity"].passed and checks["rubric"].passed
    # The judge first scored the step's labelled examples, then each answer.
    rubric = checks["rubric"].metadata
    assert rubric["judge_balanced_accuracy"].value == 1.0
    assert rubric["judge_calibration_examples"].value == len(GIST_EXAMPLES)
    assert llm.calls_for("RubricVerdict") == len(GIST_EXAMPLES) + len(rows)
    assert all(r["rubric_verdict"] == "passed" for r in rows)

    # Answers that never meet the schema: each document keeps a failed row with its reason,
    # and the blocking check fails the run (the cache is off: the same requests were answered before).
    llm.scripts["DocumentGistsAnswer"] = lambda messages: {"gist": "x" * 300, "audience": "everyone"}
    failed = run_gists(settings.model_copy(update={"llm_cache": False}), package, instance)
    assert not failed.success
    rows = warehouse_rows(settings, "document_gists")
    assert rows and all(r["status"] == "invalid" and r["error"] for r in rows)
    [validity] = [e for e in failed.get_asset_check_evaluations() if e.check_name == "schema_validity"]
    assert not validity.passed and validity.severity.value == "ERROR"
    assert f"0 of {len(rows)} answers publishable (0 model-written, 0 extractive" in validity.description

    # No endpoint answers: an outage, not a quality failure. The rows say so and the blocking
    # check judges only what was answered, so it does not turn the outage into a block.
    llm.persistent_fault = Fault(status=503)
    try:
        down = run_gists(settings.model_copy(update={"llm_cache": False, "llm_max_retries": 0}), package, instance)
    finally:
        llm.persistent_fault = None
    rows = warehouse_rows(settings, "document_gists")
    assert rows and all(r["status"] == "no_answer" for r in rows)
    [validity] = [e for e in down.get_asset_check_evaluations() if e.check_name == "schema_validity"]
    assert validity.passed and f"{len(rows)} items got no answer (outage)" in validity.description


BAD_STEPS = {
    "unknown tier": ("  tier: fast\n", "  tier: medium\n", "tier", "unknown tier 'medium'"),
    "missing prompt file": ("  prompt: prompt.txt\n", "  prompt: missing.txt\n", "prompt", "no prompt file"),
    "invalid schema": (
        "      audience: {type: string, enum: [general, expert]}\n",
        "      audience: {type: date}\n",
        "output_schema.properties.audience",
        "unsupported type 'date'",
    ),
    "unknown field": (
        "  partitions: document_batches\n",
        "  partitions: document_batches\n  temprature: 0.2\n",
        "temprature",
        None,
    ),
    "unknown upstream asset": (
        "  inputs: [source_documents]\n",
        "  inputs: [source_documents, source_docs]\n",
        "inputs.1",
        "unknown upstream asset 'source_docs'",
    ),
    "wrong type": (
        "  partitions: document_batches\n",
        "  partitions: document_batches\n  max_tokens: many\n",
        "max_tokens",
        "valid integer",
    ),
    "missing calibration file": (
        "      calibration: calibration.jsonl\n",
        "      calibration: examples.jsonl\n",
        "checks.1.calibration",
        "no such calibration file",
    ),
    "judge floor out of range": (
        "      calibration: calibration.jsonl\n",
        "      calibration: calibration.jsonl\n      min_judge_accuracy: 80\n",
        "checks.1.min_judge_accuracy",
        "not between 0 and 1",
    ),
    "unknown check kind": (
        "    - kind: rubric\n",
        "    - kind: vibes\n",
        "checks.1.kind",
        "unknown check kind 'vibes'",
    ),
}


@pytest.mark.unit
@pytest.mark.parametrize("kind", list(BAD_STEPS))
def test_a_malformed_step_fails_loading_naming_the_file_line_and_field(settings, tmp_path, kind):
    before, after, field, message = BAD_STEPS[kind]
    yaml_text = GIST_STEP.replace("  inputs:", "  tier: fast\n  inputs:")
    assert before in yaml_text
    broken = yaml_text.replace(before, after)
    package = step_package(tmp_path / "project", {"bad_step": gist_folder(broken)})

    with pytest.raises(Exception) as raised:
        build_definitions(settings, step_modules=(*STEP_MODULES, package))

    yaml_path = Path(package.__file__).parent / "bad_step" / "defs.yaml"
    error = located_error(raised.value, yaml_path)
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if text not in yaml_text.splitlines())
    assert f"{yaml_path}:{line}" in error and f"attributes.{field}" in error, error
    if message:
        assert message in error, error


@pytest.mark.unit
def test_a_rubric_check_without_labelled_examples_fails_loading_at_its_line(settings, tmp_path):
    """A judge that was never measured cannot gate: the check's own line is named."""
    broken = GIST_STEP.replace("      calibration: calibration.jsonl\n", "")
    package = step_package(tmp_path / "project", {"bad_step": gist_folder(broken)})

    with pytest.raises(Exception) as raised:
        build_definitions(settings, step_modules=(*STEP_MODULES, package))

    yaml_path = Path(package.__file__).parent / "bad_step" / "defs.yaml"
    error = located_error(raised.value, yaml_path)
    line = broken.splitlines().index("    - kind: rubric") + 1
    assert f"{yaml_path}:{line}: attributes.checks.1.calibration: a rubric check needs calibration" in error, error


@pytest.mark.unit
def test_a_calibration_file_with_one_label_only_fails_loading(tmp_path):
    """Balanced accuracy needs good and bad examples: a file of good ones only cannot prove a judge."""
    folder = tmp_path / "step"
    folder.mkdir()
    for name, text in gist_folder().items():
        (folder / name).write_text(text)
    (folder / "calibration.jsonl").write_text(GIST_CALIBRATION.replace('"label": "bad"', '"label": "good"'))
    with pytest.raises(StepDefinitionError, match=r"attributes.checks.1.calibration: .*needs both good and bad"):
        LlmStep.from_file(folder / "defs.yaml")


@pytest.mark.unit
def test_the_error_of_a_step_names_the_line_of_a_nested_field(tmp_path):
    folder = tmp_path / "step"
    folder.mkdir()
    (folder / "prompt.txt").write_text(GIST_PROMPT)
    (folder / "calibration.jsonl").write_text(GIST_CALIBRATION)
    (folder / "defs.yaml").write_text(GIST_STEP.replace("      min_rate: 0.5\n", "      min_rate: 5\n"))
    with pytest.raises(
        StepDefinitionError,
        match=rf"defs.yaml:{GIST_STEP.splitlines().index('      min_rate: 0.5') + 1}: attributes.checks.1.min_rate: ",
    ):
        LlmStep.from_file(folder / "defs.yaml")


HEADLINE_STAND_IN = "      meta_description: lead_sentences\n"
BAD_STAND_INS = {
    "unknown derivation": ("      meta_description: first_paragraph\n", "meta_description", "unknown derivation"),
    "field not in the schema": (
        HEADLINE_STAND_IN + "      subtitle: lead_sentence\n",
        "subtitle",
        "'subtitle' is not a field of the answer",
    ),
    "derivation of the wrong kind": (
        "      meta_description: stated_names\n",
        "meta_description",
        "stated_names fills array fields, and meta_description is a string",
    ),
    "a required field without one": ("", "", "must give every required field (missing: meta_description)"),
}


@pytest.mark.unit
@pytest.mark.parametrize("kind", list(BAD_STAND_INS))
def test_a_bad_stand_in_fails_loading_naming_the_file_line_and_field(tmp_path, kind):
    """A stand-in must be a whole answer built by a known derivation: anything else is found at load."""
    after, field, message = BAD_STAND_INS[kind]
    folder = tmp_path / "summary_headlines"
    shutil.copytree(next(f for f in STEP_FOLDERS if f.name == "summary_headlines"), folder)
    written = (folder / "defs.yaml").read_text()
    assert HEADLINE_STAND_IN in written
    broken = written.replace(HEADLINE_STAND_IN, after)
    (folder / "defs.yaml").write_text(broken)

    with pytest.raises(StepDefinitionError) as raised:
        LlmStep.from_file(folder / "defs.yaml")

    lines = broken.splitlines()
    changed = [i for i, text in enumerate(lines, 1) if text not in written.splitlines()]
    line = changed[0] if changed else lines.index("    stand_in:") + 1
    located = f"defs.yaml:{line}: attributes.verify.stand_in" + (f".{field}" if field else ":")
    assert located in str(raised.value) and message in str(raised.value), str(raised.value)


@pytest.mark.unit
def test_json_schema_answers_are_validated_like_pydantic_models():
    model = model_from_json_schema(
        "Headline",
        {
            "type": "object",
            "properties": {
                "headline": {"type": "string", "maxLength": 10},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 2},
            },
        },
    )
    assert model(headline="short", tags=["a"]).headline == "short"
    with pytest.raises(ValueError):
        model(headline="far too long for it", tags=["a"])
    with pytest.raises(ValueError):
        model(headline="ok", tags=["a", "b", "c"])
    assert model.model_json_schema()["properties"]["tags"]["items"] == {"maxLength": 5, "type": "string"}
    with pytest.raises(ValueError):
        model(headline="ok", tags=["longer than five"])
    with pytest.raises(ValueError, match="object schema"):
        model_from_json_schema("Nothing", {"type": "string"})


def declaring_signals_from(settings: Settings, prompt_file: Path, monkeypatch: pytest.MonkeyPatch) -> Definitions:
    """The code location as it loads when `signals` reads its prompt from `prompt_file`: a copy of
    the project's prompt file, which a test edits as a person edits the project's."""
    call = replace(SIGNALS.call, prompt_file=prompt_file)
    declared = replace(SIGNALS, call=call).asset(extract_signals)
    with monkeypatch.context() as patch:
        assets = [declared if AssetKey(SIGNALS.name) in a.keys else a for a in ALL_ASSETS]
        patch.setattr(definitions, "ALL_ASSETS", assets)
        return build_definitions(settings)


@pytest.mark.integration
def test_editing_one_prompt_file_marks_only_its_dependents_stale(settings, tmp_path, monkeypatch):
    instance = DagsterInstance.ephemeral()
    assert run_digest_job(settings, instance).success
    prompt = tmp_path / "project" / SIGNALS.call.prompt_file.name
    prompt.parent.mkdir()
    shutil.copyfile(SIGNALS.call.prompt_file, prompt)

    def graph_status(defs: Definitions) -> dict[str, StaleStatus]:
        assets = list(defs.assets or [])
        resolver = get_stale_status_resolver(instance, assets)
        graph = AssetGraph.from_assets(assets)
        batches = batches_of(instance.get_dynamic_partitions("documents"))

        def status_of(key: AssetKey) -> StaleStatus:
            node = graph.get(key)
            if node.partitions_def is None:
                return resolver.get_status(key)
            if node.partitions_def.name != "document_batches":
                return (
                    StaleStatus.FRESH
                    if instance.get_latest_materialization_event(key) is None
                    else resolver.get_status(key)
                )
            statuses = {resolver.get_status(key, partition) for partition in batches}
            return StaleStatus.STALE if StaleStatus.STALE in statuses else statuses.pop()

        return {
            key.to_user_string(): status_of(key)
            for key in graph.get_all_asset_keys()
            if graph.get(key).is_materializable
        }

    unchanged = declaring_signals_from(settings, prompt, monkeypatch)
    assert {k for k, v in graph_status(unchanged).items() if v == StaleStatus.STALE} == set()

    prompt.write_text(prompt.read_text() + "\nBe brief.\n")
    edited = declaring_signals_from(settings, prompt, monkeypatch)
    versions = {
        k.to_user_string(): (
            unchanged.resolve_asset_graph().get(k).code_version,
            edited.resolve_asset_graph().get(k).code_version,
        )
        for k in edited.resolve_asset_graph().get_all_asset_keys()
    }
    assert {k for k, (a, b) in versions.items() if a != b} == {"signals"}
    status = graph_status(edited)
    assert {k for k, v in status.items() if v == StaleStatus.STALE} == {"signals"}

    # Once signals is re-materialized with the edited prompt, the assets that read it turn
    # stale (their own dependents follow as "Materialize stale" walks down the graph), and
    # nothing else: ingestion, the index and the support-triage pipeline stay fresh.
    job = Definitions.merge(edited, Definitions(jobs=[define_asset_job("signals_only", selection=["signals"])]))
    assert run_over_all_documents(
        job.resolve_job_def("signals_only"), instance, build_resources(settings)["pipeline"]
    ).success
    status = graph_status(edited)
    readers = {k.to_user_string() for k in edited.resolve_asset_graph().get(AssetKey("signals")).child_keys}
    assert readers == {"drafts", "summaries", "digest_report"}
    assert {k for k, v in status.items() if v == StaleStatus.STALE} == readers
    assert all(status[k] == StaleStatus.FRESH for k in ["source_documents", "chunks", "retrieval_index", "signals"])


@pytest.mark.unit
def test_the_projects_llm_assets_load_with_their_prompts_and_schemas():
    """`summary_headlines` is configuration alone; `signals` and `ticket_routes` do more than one
    call per row, so they are declared once, in Python, and no YAML step declares them again."""
    declared = {p.name: LlmStep.from_file(p / "defs.yaml") for p in STEP_FOLDERS if (p / "defs.yaml").is_file()}
    assert "summary_headlines" in declared and not {"signals", "ticket_routes"} & set(declared)
    assert SIGNALS.name == "signals" and SIGNALS.call.answer.__name__ == "ExtractedSignals"
    assert ROUTES.name == "ticket_routes" and ROUTES.call.answer.__name__ == "TicketIntent"
    assert "{ticket}" in ROUTES.call.prompt.template


@pytest.mark.unit
def test_the_readmes_ten_line_step_loads_as_written(tmp_path):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("# assets/digest/steps/document_gists/defs.yaml\n", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) <= 10
    folder = tmp_path / "document_gists"
    folder.mkdir()
    (folder / "defs.yaml").write_text(block)
    (folder / "prompt.txt").write_text(
        "Write a one-sentence gist of this article. <title>{title}</title> <document>{text}</document>"
    )
    step = LlmStep.from_file(folder / "defs.yaml")
    assert step.inputs == ["source_documents"] and step.partitions == "document_batches"
    assert [c.kind for c in step.checks] == ["schema_validity"] and step.checks[0].blocking
    assert set(step.answer_model.model_fields) == {"gist"}
