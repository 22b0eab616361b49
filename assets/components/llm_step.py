"""An LLM step declared in YAML: a Dagster component that turns a `defs.yaml` into an asset.

Orchestration (retries, fallbacks, cache, budget, traces, partitions, pools) is the
gateway's and Dagster's; what a domain expert edits is configuration: the prompt file,
the output schema, the tier, the inputs and the quality thresholds: a step's work is one
structured call per input row, and nothing in its YAML is Python. An asset with more logic
(grounding, a vote) is declared in Python instead, with the same call and the same asset
construction (assets/components/llm_asset.py), so each asset is declared in one place.

A malformed step fails definition loading with the file, the line and the field, so a
typo in YAML is found by `dg check defs`, not by a run at three in the morning.

A model's verdict gates nothing until the model has earned it: a `rubric` check ships
labelled good and bad answers (`calibration`), its judge scores them first, and under
`min_judge_accuracy` every answer is `unjudged` rather than passed. What no judge can talk
past is checked by rules (`verify`): a published field that copies the prompt's own
instructions, or states a number, date or name its input lacks, is re-asked, then invalid,
or, where the step names `stand_in` derivations, replaced by its input's own words (marked
`extractive` and held to the same rules), so one small model's bad headline does not block a run.
"""

import importlib
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal, get_args

import dagster as dg
import pandas as pd
import yaml
from pydantic import BaseModel, Field, PrivateAttr, ValidationError, create_model

from assets.components.llm_asset import LlmAsset, LlmCall, LlmRun
from assets.components.partitions import DOCUMENT_BATCHES, ITEM_COLUMNS, TICKETS, partition_column
from assets.components.routed_calls import RoutedItem, RoutingLog, ask_routed
from resources import ModelCallError, ModelResource, ModelSession
from resources.gateway.model import MODEL_POOL
from resources.gateway.request import ContextOverflow
from resources.gateway.tier_routing import RoutingPolicy
from resources.guardrails.answer_rules import field_limits, stand_in_answer, verified_answer_model
from resources.guardrails.prompt_injection import neutralize
from resources.metadata.markdown_tables import markdown_table
from resources.metadata.partition_results import partition_results
from resources.prompts import Prompt
from resources.tables import to_frame
from resources.verification.judge_calibration import (
    DEFAULT_MIN_JUDGE_ACCURACY,
    UNJUDGED,
    CalibrationFileError,
    JudgeCalibration,
    LabelledExample,
    calibration_usage,
    examples_hash,
    read_examples,
)
from resources.verification.rubric_judge import calibrate_judge, judge_answers
from resources.verification.stand_ins import DERIVATIONS

TIERS = ("fast", "strong")
CONTEXT_OVERFLOWS = get_args(ContextOverflow)
# Each pipeline folder keeps its declared steps in `steps/<name>/defs.yaml`.
PIPELINES_DIR = Path(__file__).parent.parent
# Partitioning a step may declare: the partitions definition and the column holding its key.
PARTITIONS: dict[str, tuple[dg.PartitionsDefinition, str]] = {
    p.name: (p, partition_column(p)) for p in (DOCUMENT_BATCHES, TICKETS)
}
JSON_TYPES: dict[str, type] = {"string": str, "integer": int, "number": float, "boolean": bool}
# Row statuses whose answer may be published: the model's own, or a stand-in from the row's input.
PUBLISHABLE = ("valid", "extractive")


class StepDefinitionError(ValueError):
    """A step's YAML is wrong; the message names the file, the line and the field."""


class SchemaProblem(ValueError):
    """An output schema outside the supported subset, at `path` within the schema."""

    def __init__(self, path: tuple[str, ...], problem: str):
        super().__init__(problem)
        self.path = path


@dataclass(frozen=True)
class StepSource:
    """Where each field of a `defs.yaml` is written, so that errors can point at it."""

    path: Path
    lines: dict[tuple[str | int, ...], int]

    @classmethod
    def read(cls, path: Path) -> "StepSource":
        lines: dict[tuple[str | int, ...], int] = {}

        def walk(node: yaml.Node, at: tuple[str | int, ...]) -> None:
            lines[at] = node.start_mark.line + 1
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    lines[(*at, key.value)] = key.start_mark.line + 1
                    walk(value, (*at, key.value))
                    lines[(*at, key.value)] = key.start_mark.line + 1
            elif isinstance(node, yaml.SequenceNode):
                for index, item in enumerate(node.value):
                    walk(item, (*at, index))

        root = yaml.compose(path.read_text(encoding="utf-8"))
        if root is not None:
            walk(root, ())
        return cls(path=path, lines=lines)

    def line(self, field: tuple[str | int, ...]) -> int:
        """The line of `attributes.<field>`, or of its nearest written ancestor."""
        at = ("attributes", *field)
        while at and at not in self.lines:
            at = at[:-1]
        return self.lines.get(at, 1)

    def attributes(self) -> dict[str, Any]:
        document = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        return document.get("attributes") or {}

    def errors(self, exc: ValidationError) -> StepDefinitionError:
        """Every problem pydantic found, one located line each."""
        return StepDefinitionError("\n".join(str(self.error(tuple(e["loc"]), e["msg"])) for e in exc.errors()))

    def error(self, field: tuple[str | int, ...], problem: str) -> StepDefinitionError:
        name = ".".join(str(f) for f in ("attributes", *field))
        return StepDefinitionError(f"{self.path}:{self.line(field)}: {name}: {problem}")


class StepCheck(dg.Model, dg.Resolvable):
    """A quality check of the step's rows; blocking checks stop what reads the step."""

    kind: str = Field(
        description="schema_validity: share of rows whose answer validated; rubric: share a judge model passes."
    )
    min_rate: float = Field(default=1.0, description="The pass threshold, a share of rows (0 to 1).")
    blocking: bool = False
    rubric: str = Field(default="", description="What the judge holds each answer to (rubric checks).")
    tier: str = Field(default="strong", description="The judge's tier (rubric checks).")
    calibration: str = Field(
        default="",
        description="Labelled good and bad answers (JSONL, beside the YAML) the judge must score first (rubric checks).",
    )
    min_judge_accuracy: float = Field(
        default=DEFAULT_MIN_JUDGE_ACCURACY,
        description="The judge's balanced accuracy on its calibration below which its verdicts do not count.",
    )
    description: str = ""

    @property
    def name(self) -> str:
        return self.kind

    def spec_description(self, asset: str) -> str:
        if self.description:
            return self.description
        if self.kind == "rubric":
            return (
                f"At least {self.min_rate:.0%} of {asset}'s answers meet the rubric, judged by a model that scored "
                f"at least {self.min_judge_accuracy:.0%} on its labelled examples: {self.rubric}"
            )
        return f"At least {self.min_rate:.0%} of {asset}'s rows hold a schema-valid answer."


class StepVerification(dg.Model, dg.Resolvable):
    """Published fields held to deterministic rules against the input they are written from."""

    fields: list[str] = Field(description="The answer's text fields that are published.")
    against: str = Field(description="The input column they may state facts from (e.g. summary).")
    stand_in: dict[str, str] = Field(
        default={},
        description="Per answer field, the derivation from the `against` column that stands in when the model's "
        f"answer still breaks a rule after its re-asks ({', '.join(DERIVATIONS)}); the row is then `extractive`.",
    )


def import_object(reference: str) -> Any:
    """`package.module:name` (or `package.module.name`) to the object it names."""
    module, _, name = reference.partition(":") if ":" in reference else reference.rpartition(".")
    if not module or not name:
        raise ValueError(f"{reference!r} is not a module:name reference")
    return getattr(importlib.import_module(module), name)


def model_from_json_schema(name: str, schema: dict[str, Any]) -> type[BaseModel]:
    """A pydantic model from the JSON Schema subset a structured answer needs: an object of
    strings (enum, maxLength), numbers, booleans and arrays of them. Anything else is
    refused here rather than half-supported at run time."""
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict) or not schema["properties"]:
        raise SchemaProblem((), "must be an object schema with properties")
    required = set(schema.get("required", list(schema["properties"])))
    fields: dict[str, Any] = {}
    for field, spec in schema["properties"].items():
        annotation, constraints = _field_type(("properties", field), spec)
        default = ... if field in required else None
        fields[field] = (
            annotation if field in required else annotation | None,
            Field(default, description=spec.get("description", ""), **constraints),
        )
    return create_model(schema.get("title") or name, **fields)


def _field_type(path: tuple[str, ...], spec: Any) -> tuple[Any, dict[str, Any]]:
    if not isinstance(spec, dict):
        raise SchemaProblem(path, "must be a schema object")
    kind = spec.get("type")
    if "enum" in spec:
        values = tuple(spec["enum"])
        if not values or not all(isinstance(v, str) for v in values):
            raise SchemaProblem((*path, "enum"), "enum must list strings")
        return Literal[values], {}  # type: ignore[valid-type]
    if kind == "array":
        item, item_constraints = _field_type((*path, "items"), spec.get("items", {}))
        return list[Annotated[item, Field(**item_constraints)]], {
            k: spec[j] for k, j in (("min_length", "minItems"), ("max_length", "maxItems")) if j in spec
        }
    if kind not in JSON_TYPES:
        raise SchemaProblem(path, f"unsupported type {kind!r} (use string, integer, number, boolean, array)")
    names = {"maxLength": "max_length", "minLength": "min_length", "minimum": "ge", "maximum": "le"}
    return JSON_TYPES[kind], {names[k]: v for k, v in spec.items() if k in names}


def step_row_model(
    asset: str, answer: type[BaseModel], key: str, partition_column: str, judged: bool = False
) -> type[BaseModel]:
    """The table a generic step stores: the item it answered for, the answer's fields,
    whether the answer validated (a failed item keeps its row and its reason) and, for a
    step with a rubric, the judge's verdict on it."""
    fields: dict[str, Any] = {key: (str, Field(description="The input row this answer is for."))}
    if partition_column and partition_column != key:
        fields[partition_column] = (str, Field(default="", description="The partition of this row."))
    for name, field in answer.model_fields.items():
        fields[name] = (field.annotation | None, Field(default=None, description=field.description or ""))
    fields["status"] = (
        Literal["valid", "extractive", "invalid", "no_answer"],
        Field(
            description="valid: the model's answer met the output schema and rules; extractive: it never did, and "
            "the input's own words stand in (the model's error is kept); invalid: neither answer held; "
            "no_answer: no endpoint answered (an outage, not a quality failure)."
        ),
    )
    fields["error"] = (str, "")
    if judged:
        fields["rubric_verdict"] = (
            Literal["passed", "failed", "unjudged", ""],
            Field(
                default="",
                description="The rubric judge's verdict on a valid answer; unjudged: the judge is unproven "
                "(under its calibration floor) or gave no verdict, so the answer counts as not passed.",
            ),
        )
        fields["rubric_reason"] = (str, "")
    fields["trace_id"] = (
        str,
        Field(default="", description="The model call whose answer was used, in the trace table."),
    )
    return create_model(f"{_camel(asset)}Row", **fields)


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name) if part)


@dataclass
class StepRun(LlmRun):
    """The run of a step's asset, with the step whose rows it answers."""

    step: "LlmStep"
    # How the items were routed to tiers, for a step with `routing`.
    routing: RoutingLog | None = None


class LlmStep(dg.Component, dg.Model, dg.Resolvable):
    """One model-backed asset declared in YAML (see the README: "Add an AI step in 10 lines of YAML")."""

    asset: str = Field(description="The asset's name.")
    group: str = Field(description="The asset group it belongs to.")
    description: str = ""
    inputs: list[str] = Field(default=[], description="Upstream assets, by key.")
    for_each: str = Field(
        default="", description="The input table whose rows are the items (default: the first input)."
    )
    key: str = Field(
        default="",
        description="The column naming each item (default: document for document batches, ticket for tickets, else item).",
    )
    prompt: str = Field(description="The prompt template file, relative to this YAML; {column} takes the item's value.")
    output_schema: str | dict[str, Any] = Field(description="A pydantic model (module:Name) or a JSON Schema object.")
    tier: str = Field(default="fast", description="The model tier: fast or strong.")
    max_tokens: int = Field(default=400, description="The answer's token budget (1 to 32000).")
    partitions: str = Field(default="", description="document_batches, tickets, or empty for an unpartitioned step.")
    pool: str = Field(default=MODEL_POOL, description="Dagster concurrency pool of its model calls.")
    version: int = Field(
        default=1, description="Part of the code version: bump it to mark what the step produced as changed."
    )
    compare_tiers: bool = Field(
        default=False, description="Also record what the calls would have cost on the strong tier."
    )
    batch: bool = Field(
        default=False,
        description="A bulk materialization (at least batch_min_requests items the cache cannot answer) may go "
        "through a batch-capable endpoint's batch API at the batch price, and waits for its answers.",
    )
    context_overflow: str = Field(
        default="fallback",
        description="An item's prompt no endpoint's context window takes: fallback (only an endpoint with a larger "
        "context_window_tokens is tried; else the item fails) or cut (its longest text is cut to fit and asked again).",
    )
    routing: RoutingPolicy | None = Field(
        default=None,
        description="Choose the tier per item from the measured pass rates of this step's answers: the cheapest "
        "tier whose rate meets `target` (its failures asked again on the strong tier), e.g. "
        "{target: 0.9, explore: 0.1, route_by: kind}; `tier` is then unused.",
    )
    checks: list[StepCheck] = []
    verify: StepVerification | None = Field(
        default=None,
        description="Deterministic rules on published fields: no prompt echo, and no number, date or name that "
        "the `against` column does not state; a field that breaks them is re-asked, then the row is invalid.",
    )

    _source: StepSource | None = PrivateAttr(default=None)
    _call: LlmCall | None = PrivateAttr(default=None)
    _answer: type[BaseModel] | None = PrivateAttr(default=None)
    _rows: type[BaseModel] | None = PrivateAttr(default=None)
    _examples: dict[str, list[LabelledExample]] = PrivateAttr(default_factory=dict)

    @classmethod
    def load(cls, attributes: BaseModel | None, context: dg.ComponentLoadContext) -> "LlmStep":
        """Validates the YAML against the fields, then every reference it makes (prompt file,
        schema, tier), each failure pointing at its line."""
        source = StepSource.read(context.path / "defs.yaml")
        try:
            step = super().load(attributes, context)
        except ValidationError as exc:
            raise source.errors(exc) from None
        except (TypeError, ValueError):
            # Some constraint failures surface without a location; validating the file's own
            # attributes names the field and its line.
            try:
                cls.model_validate(source.attributes())
            except ValidationError as exc:
                raise source.errors(exc) from None
            raise
        step.resolve(source)
        return step

    @classmethod
    def from_file(cls, path: Path) -> "LlmStep":
        """A step read straight from its `defs.yaml`, outside a component tree (for tools and tests)."""
        source = StepSource.read(path)
        try:
            step = cls.model_validate(source.attributes())
        except ValidationError as exc:
            raise source.errors(exc) from None
        step.resolve(source)
        return step

    def resolve(self, source: StepSource) -> None:
        self._source = source
        folder = source.path.parent
        # Bounds are checked here, not as pydantic constraints: Dagster's own pass over the
        # attributes fails without a location on a constrained field given the wrong type.
        if self.tier not in TIERS:
            raise source.error(("tier",), f"unknown tier {self.tier!r} (known: {', '.join(TIERS)})")
        if not 1 <= self.max_tokens <= 32_000:
            raise source.error(("max_tokens",), f"{self.max_tokens} is not between 1 and 32000")
        if self.context_overflow not in CONTEXT_OVERFLOWS:
            raise source.error(
                ("context_overflow",),
                f"unknown context_overflow {self.context_overflow!r} (known: {', '.join(CONTEXT_OVERFLOWS)})",
            )
        if self.version < 1:
            raise source.error(("version",), "a step's version starts at 1")
        if self.partitions and self.partitions not in PARTITIONS:
            raise source.error(
                ("partitions",), f"unknown partitions {self.partitions!r} (known: {', '.join(PARTITIONS)})"
            )
        for name, problem in self.routing.problems() if self.routing else []:
            raise source.error(("routing", name), problem)
        prompt_path = folder / self.prompt
        if not prompt_path.is_file():
            raise source.error(("prompt",), f"no prompt file {prompt_path}")
        self._answer = self._resolve_schema(source)
        self._call = LlmCall(
            prompt_file=prompt_path,
            answer=self._answer,
            tier=self.tier,  # type: ignore[arg-type]
            max_tokens=self.max_tokens,
            compare_tiers=self.compare_tiers,
            context_overflow=self.context_overflow,  # type: ignore[arg-type]
            routing=self.routing,
            batch=self.batch,
        )
        for index, check in enumerate(self.checks):
            if check.kind not in ("schema_validity", "rubric"):
                raise source.error(
                    ("checks", index, "kind"), f"unknown check kind {check.kind!r} (known: schema_validity, rubric)"
                )
            if check.kind == "rubric" and not check.rubric.strip():
                raise source.error(("checks", index, "rubric"), "a rubric check needs the rubric text")
            if not 0 <= check.min_rate <= 1:
                raise source.error(("checks", index, "min_rate"), f"{check.min_rate} is not a share between 0 and 1")
            if check.tier not in TIERS:
                raise source.error(
                    ("checks", index, "tier"), f"unknown tier {check.tier!r} (known: {', '.join(TIERS)})"
                )
            if check.kind == "rubric":
                self._examples[check.name] = self._resolve_calibration(source, index, check)
        if len({c.name for c in self.checks}) != len(self.checks):
            raise source.error(("checks",), "at most one check of each kind")
        if self.verify is not None:
            self._resolve_verification(source)
        if not self.inputs:
            raise source.error(("inputs",), "a step needs at least one input table")
        if self.for_each and self.for_each not in self.inputs:
            raise source.error(("for_each",), f"{self.for_each!r} is not one of the inputs {self.inputs}")
        partition_column = PARTITIONS[self.partitions][1] if self.partitions else ""
        self._rows = step_row_model(
            self.asset,
            self._answer,
            self.item_key,
            partition_column,
            judged=self.rubric_check is not None,
        )
        templated = set(re.findall(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})", self.prompt_template.template))
        if not templated:
            raise source.error(
                ("prompt",),
                f"{prompt_path.name} has no {{column}} placeholder, so every item would get the same prompt",
            )

    def _resolve_calibration(self, source: StepSource, index: int, check: StepCheck) -> list[LabelledExample]:
        """A rubric check's labelled examples, each answer valid under the step's own schema."""
        field = ("checks", index, "calibration")
        if not 0 <= check.min_judge_accuracy <= 1:
            raise source.error(
                ("checks", index, "min_judge_accuracy"), f"{check.min_judge_accuracy} is not between 0 and 1"
            )
        if not check.calibration:
            raise source.error(
                field, "a rubric check needs calibration: a JSONL file of labelled good and bad answers for its judge"
            )
        path = source.path.parent / check.calibration
        try:
            examples = read_examples(path)
        except CalibrationFileError as exc:
            raise source.error(field, str(exc)) from None
        assert self._answer is not None
        for number, example in enumerate(examples, 1):
            try:
                self._answer.model_validate(example.answer)
            except ValidationError as exc:
                raise source.error(
                    field, f"{path}: example {number}: not an answer of this step: {exc.errors()[0]['msg']}"
                ) from None
        return examples

    def _resolve_verification(self, source: StepSource) -> None:
        assert self.verify is not None and self._answer is not None
        for index, name in enumerate(self.verify.fields):
            field = self._answer.model_fields.get(name)
            if field is None or field.annotation not in (str, str | None):
                raise source.error(("verify", "fields", index), f"{name!r} is not a text field of the answer")
        if f"{{{self.verify.against}}}" not in self.prompt_template.template:
            raise source.error(
                ("verify", "against"), f"{self.verify.against!r} is not a {{column}} of the prompt {self.prompt}"
            )
        if self.verify.stand_in:
            self._resolve_stand_in(source)

    def _resolve_stand_in(self, source: StepSource) -> None:
        """Every stand-in field is a field of the answer, derived by a known derivation of its
        kind, and together they give every required field: a stand-in must be a whole answer."""
        assert self.verify is not None and self._answer is not None
        for name, derivation in self.verify.stand_in.items():
            at = ("verify", "stand_in", name)
            if name not in self._answer.model_fields:
                raise source.error(
                    at, f"{name!r} is not a field of the answer ({', '.join(self._answer.model_fields)})"
                )
            if derivation not in DERIVATIONS:
                raise source.error(at, f"unknown derivation {derivation!r} (known: {', '.join(DERIVATIONS)})")
            kind, wanted = field_limits(self._answer, name)[0], DERIVATIONS[derivation][1]
            if kind != wanted:
                raise source.error(at, f"{derivation} fills {wanted} fields, and {name} is a {kind}")
        missing = [
            f for f, info in self._answer.model_fields.items() if info.is_required() and f not in self.verify.stand_in
        ]
        if missing:
            raise source.error(
                ("verify", "stand_in"), f"a stand-in must give every required field (missing: {', '.join(missing)})"
            )

    @property
    def rubric_check(self) -> StepCheck | None:
        return next((c for c in self.checks if c.kind == "rubric"), None)

    def examples(self, check: StepCheck) -> list[LabelledExample]:
        return self._examples[check.name]

    def _resolve_schema(self, source: StepSource) -> type[BaseModel]:
        if isinstance(self.output_schema, dict):
            try:
                return model_from_json_schema(f"{_camel(self.asset)}Answer", self.output_schema)
            except SchemaProblem as exc:
                raise source.error(("output_schema", *exc.path), f"invalid schema: {exc}") from None
            except (ValueError, TypeError) as exc:
                raise source.error(("output_schema",), f"invalid schema: {exc}") from None
        model = self._import(("output_schema",), self.output_schema)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise source.error(("output_schema",), f"{self.output_schema!r} is not a pydantic model")
        return model

    def _import(self, field: tuple[str, ...], reference: str) -> Any:
        try:
            return import_object(reference)
        except (ImportError, AttributeError, ValueError) as exc:
            raise self.source.error(field, f"cannot import {reference!r}: {exc}") from None

    @property
    def source(self) -> StepSource:
        assert self._source is not None, "a step is resolved when it is loaded"
        return self._source

    @property
    def call(self) -> LlmCall:
        assert self._call is not None, "a step is resolved when it is loaded"
        return self._call

    @property
    def prompt_template(self) -> Prompt:
        return self.call.prompt

    @property
    def answer_model(self) -> type[BaseModel]:
        assert self._answer is not None
        return self._answer

    @property
    def row_model(self) -> type[BaseModel]:
        assert self._rows is not None
        return self._rows

    @property
    def llm_asset(self) -> LlmAsset:
        """The asset this step declares, built as every LLM asset is. Its code version holds the
        step's version, its prompt's hash and its schema's, and how it draws items from its
        inputs and judges them: editing the prompt file changes this asset's code version and
        no other's."""
        rubric = self.rubric_check
        return LlmAsset(
            name=self.asset,
            group=self.group,
            description=self.description or None,
            call=self.call,
            rows=self.row_model,
            ins=self.inputs,
            partitions=PARTITIONS[self.partitions][0] if self.partitions else None,
            pool=self.pool,
            version=self.version,
            shaped_by=(
                self.for_each,
                self.key,
                *([self.verify.model_dump()] if self.verify else []),
                *(
                    [rubric.rubric, rubric.tier, rubric.min_judge_accuracy, examples_hash(self.examples(rubric))]
                    if rubric
                    else []
                ),
            ),
        )

    @property
    def code_version(self) -> str:
        return self.llm_asset.code_version

    def input_line(self, name: str) -> StepDefinitionError:
        return self.source.error(("inputs", self.inputs.index(name)), f"unknown upstream asset {name!r}")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return dg.Definitions(assets=[self.build_asset()], asset_checks=[self.build_check(c) for c in self.checks])

    @property
    def item_key(self) -> str:
        """The column naming each item: `key`, else the partitions' item column, else `item`."""
        return self.key or ITEM_COLUMNS.get(self.partitions, "") or "item"

    def build_asset(self) -> dg.AssetsDefinition:
        step = self
        partition_column = PARTITIONS[self.partitions][1] if self.partitions else ""

        def rows(run: LlmRun) -> dg.Output:
            return run_rows(StepRun(**vars(run), step=step), partition_column)

        return self.llm_asset.asset(rows)

    def build_check(self, check: StepCheck) -> dg.AssetChecksDefinition:
        step = self

        @dg.asset_check(
            asset=self.asset,
            name=check.name,
            blocking=check.blocking,
            description=check.spec_description(self.asset),
            required_resource_keys={"model"} if check.kind == "rubric" else set(),
        )
        def _check(context: dg.AssetCheckExecutionContext, **checked: pd.DataFrame) -> dg.AssetCheckResult:
            (rows,) = checked.values()
            if check.kind == "rubric":
                return judge_rubric(context, step, check, rows)
            return schema_validity(step, check, rows)

        return _check


def render_item(prompt: Prompt, row: dict[str, Any]) -> str:
    """The prompt for one item; every value is data, neutralized so it cannot close a block."""
    return prompt.render(**{k: neutralize(str(v)) if v is not None else "" for k, v in row.items()})


def run_rows(run: StepRun, partition_column: str) -> dg.Output:
    """The generic step: one structured call per row of the `for_each` table."""
    step = run.step
    table: pd.DataFrame = run.inputs[step.for_each or step.inputs[0]]
    key = step.item_key
    items = table.to_dict(orient="records")
    missing = sorted(
        set(re.findall(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})", step.prompt_template.template))
        - set(table.columns)
    )
    if missing:
        raise step.source.error(
            ("prompt",),
            f"placeholders {missing} are not columns of {step.for_each or step.inputs[0]} ({', '.join(table.columns)})",
        )
    if items and key not in items[0] and key != "item":
        raise step.source.error(("key",), f"{key!r} is not a column of {step.for_each or step.inputs[0]}")
    names = [str(item.get(key, index)) for index, item in enumerate(items)]
    partitions = [str(item.get(partition_column, "")) for item in items]
    judging = start_judging(run)
    answers = ask_items(run, items, partitions)
    rows = []
    for item, name, partition, (answer, trace_id) in zip(items, names, partitions, answers):
        base = {key: name, **({partition_column: partition} if partition_column and partition_column != key else {})}
        if isinstance(answer, Exception):
            outage = isinstance(answer, ModelCallError) and answer.outage and not answer.invalid_output
            stand_in, why = (None, "") if outage else stand_in_for(step, item, name)
            if stand_in is not None:
                rows.append(
                    step.row_model(**base, **stand_in.model_dump(), status="extractive", error=str(answer)[:500])
                )
                continue
            error = "; ".join(filter(None, [str(answer)[: 500 - len(why[:150])], why[:150]]))
            rows.append(step.row_model(**base, status="no_answer" if outage else "invalid", error=error))
        else:
            rows.append(step.row_model(**base, **answer.model_dump(), status="valid", trace_id=trace_id))
    # The judge's calibration describes the judge, not the rows: every partition shows it.
    judge_figures = judge_rows(run, judging, items, rows, partitions) if judging else {}
    routed = run.routing
    if not partition_column:
        routing = routed.metadata() if routed else {}
        return dg.Output(to_frame(rows, step.row_model), metadata={**rows_metadata(rows), **judge_figures, **routing})
    # Each partition's materialization describes its own rows and calls, so that adding them
    # up over partitions gives the run's totals.
    for partition in run.context.partition_keys:
        mine = [r for r, p in zip(rows, partitions) if p == partition]
        routing = routed.metadata(partition) if routed else {}
        run.context.add_asset_metadata({**rows_metadata(mine), **judge_figures, **routing}, partition_key=partition)
    return dg.Output(to_frame(rows, step.row_model))


def stand_in_for(step: LlmStep, item: dict[str, Any], name: str) -> tuple[BaseModel | None, str]:
    """The answer the item's own verified input gives when the model's stayed invalid, and "";
    else None and why ("" for a step without stand-ins)."""
    verify = step.verify
    if verify is None or not verify.stand_in:
        return None, ""
    return stand_in_answer(
        step.answer_model,
        verify.stand_in,
        verify.fields,
        render_item(step.prompt_template, item),
        str(item.get(verify.against) or ""),
        verify.against,
        fallback=name,
    )


def ask_items(run: StepRun, items: list[dict[str, Any]], partitions: list[str]) -> list[tuple[Any, str]]:
    """One structured call per item, at the gateway's concurrency. With `verify`, each item's
    answer model holds its published fields to that item's prompt and evidence, so a field
    that breaks a rule is re-asked with the reason, and stays invalid if it keeps breaking it."""
    step = run.step
    prompts = [render_item(step.prompt_template, item) for item in items]
    verify = step.verify
    done = run.llm.progress(step.asset, len(items))

    def schema_for(index: int) -> type[BaseModel]:
        if verify is None:
            return step.answer_model
        evidence = str(items[index].get(verify.against) or "")
        return verified_answer_model(step.answer_model, verify.fields, prompts[index], evidence, verify.against)

    def options(index: int, tier: str) -> dict[str, Any]:
        return {
            "tier": tier,
            "max_tokens": step.max_tokens,
            "partition": partitions[index],
            "context_overflow": run.call.context_overflow,
        }

    def ask(index: int, tier: str, llm: ModelSession) -> tuple[Any, str]:
        try:
            messages = [{"role": "user", "content": prompts[index]}]
            return llm.traced_structured(messages, schema_for(index), **options(index, tier))
        except ModelCallError as exc:
            return exc, ""

    if step.batch and step.routing is None:  # a routed step's tiers are chosen item by item, as answers come
        run.llm.offer_batch(
            [
                run.llm.request([{"role": "user", "content": prompts[i]}], schema_for(i), **options(i, step.tier))
                for i in range(len(items))
            ]
        )

    if step.routing is not None:
        answers, run.routing = ask_routed(run, step.routing, routed_items(step, items, partitions), ask, done)
        return answers

    def one(index: int) -> tuple[Any, str]:
        try:
            return ask(index, step.tier, run.llm)
        finally:
            done()

    with ThreadPoolExecutor(max_workers=max(1, run.model.max_concurrency)) as pool:
        return list(pool.map(one, range(len(items))))


def routed_items(step: LlmStep, items: list[dict[str, Any]], partitions: list[str]) -> list[RoutedItem]:
    """Each item's name and request type (its `route_by` column), for the router."""
    routing = step.routing
    assert routing is not None
    if routing.route_by and items and routing.route_by not in items[0]:
        raise step.source.error(
            ("routing", "route_by"), f"{routing.route_by!r} is not a column of {step.for_each or step.inputs[0]}"
        )
    return [
        RoutedItem(key=str(item.get(step.item_key, index)), request_type=routing.request_type(item), partition=part)
        for index, (item, part) in enumerate(zip(items, partitions))
    ]


@dataclass(frozen=True)
class Judging:
    """The rubric check a step's rows are judged for, and how its judge measured up."""

    check: StepCheck
    calibration: JudgeCalibration
    usage: dict[str, object]

    @property
    def proven(self) -> bool:
        return self.calibration.proven(self.check.min_judge_accuracy)


def start_judging(run: StepRun) -> Judging | None:
    """Before any row is answered, the judge of the step's rubric scores its labelled examples
    (once per judge configuration: the result is cached), so an unproven judge is known
    before it is asked about a single real answer."""
    check = run.step.rubric_check
    if check is None:
        return None
    # Its own ledger: the examples belong to no partition, and their cost is reported apart.
    judge = run.llm.beside("judge_calibration")
    calibration = calibrate_judge(
        judge,
        tier=check.tier,  # type: ignore[arg-type]
        rubric=check.rubric,
        examples=run.step.examples(check),
    )
    judging = Judging(check=check, calibration=calibration, usage=calibration_usage(judge.ledger))
    if not judging.proven:
        run.context.log.warning(
            f"{run.step.asset}: rubric answers are unjudged: {calibration.unproven_reason(check.min_judge_accuracy)}"
        )
    return judging


def prompt_columns(step: LlmStep, item: dict[str, Any]) -> dict[str, Any]:
    """What an answer was written from: the item's values that its prompt holds."""
    used = re.findall(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})", step.prompt_template.template)
    return {column: item.get(column) for column in dict.fromkeys(used)}


def judge_rows(
    run: StepRun, judging: Judging, items: list[dict[str, Any]], rows: list[BaseModel], partitions: list[str]
) -> dict[str, object]:
    """Each publishable row's rubric verdict (a stand-in is published too), set on the row;
    `unjudged` for all of them when the judge is unproven."""
    step, check = run.step, judging.check
    valid = [i for i, row in enumerate(rows) if getattr(row, "status") in PUBLISHABLE]
    fields = list(step.answer_model.model_fields)
    verdicts = judge_answers(
        run.llm,
        tier=check.tier,  # type: ignore[arg-type]
        rubric=check.rubric,
        answers=[(prompt_columns(step, items[i]), {f: getattr(rows[i], f) for f in fields}) for i in valid],
        proven=judging.proven,
        partitions=[partitions[i] for i in valid],
    )
    for index, (verdict, reason) in zip(valid, verdicts):
        setattr(rows[index], "rubric_verdict", verdict)
        setattr(rows[index], "rubric_reason", reason[:200])
    return {
        **judging.calibration.metadata(check.min_judge_accuracy),
        "judge_proven": judging.proven,
        **judging.usage,
    }


def rows_metadata(rows: list[BaseModel]) -> dict[str, object]:
    """What a person judges a materialization by; the session adds the model usage."""
    valid = sum(getattr(r, "status") == "valid" for r in rows)
    extractive = sum(getattr(r, "status") == "extractive" for r in rows)
    verdicts = [getattr(r, "rubric_verdict", None) for r in rows]
    judged = (
        {f"rubric_{v}": sum(verdict == v for verdict in verdicts) for v in ("passed", "failed", UNJUDGED)}
        if rows and "rubric_verdict" in type(rows[0]).model_fields
        else {}
    )
    return {
        "rows": len(rows),
        "valid": valid,
        "extractive": extractive,
        "validity_rate": round(valid / len(rows), 3) if rows else 0.0,
        **judged,
        "preview": dg.MetadataValue.md(markdown_table([r.model_dump(mode="json") for r in rows[:10]])),
    }


def per_partition(step: LlmStep, verdicts: list[tuple[dict[str, Any], bool, str]]) -> dict[str, dg.MetadataValue]:
    """For a partitioned step, each partition's own verdict (see resources/metadata/partition_results.py)."""
    if not step.partitions:
        return {}
    column = PARTITIONS[step.partitions][1]
    return partition_results((str(row.get(column, "")), passed, reason) for row, passed, reason in verdicts)


def schema_validity(step: LlmStep, check: StepCheck, rows: pd.DataFrame) -> dg.AssetCheckResult:
    """The share of answers that may be published: the model's own that met the schema and its
    rules, and the stand-ins that did where the model's never did, each counted apart so a
    person sees how much the model wrote. Items no endpoint answered are left out: an outage
    is not a quality failure (the run's report and the usage metadata name it), and a
    blocking quality gate must not turn it into one."""
    records = rows.to_dict(orient="records") if len(rows) else []
    answered = [r for r in records if r["status"] != "no_answer"]
    invalid = [r for r in answered if r["status"] not in PUBLISHABLE]
    written = sum(r["status"] == "valid" for r in answered)
    extractive = sum(r["status"] == "extractive" for r in answered)
    rate = 1 - len(invalid) / len(answered) if answered else 1.0
    unanswered = len(records) - len(answered)
    return dg.AssetCheckResult(
        passed=rate >= check.min_rate,
        severity=dg.AssetCheckSeverity.ERROR if check.blocking else dg.AssetCheckSeverity.WARN,
        description=f"{len(answered) - len(invalid)} of {len(answered)} answers publishable ({written} model-written, "
        f"{extractive} extractive stand-ins; minimum {check.min_rate:.0%})"
        + (f"; {unanswered} items got no answer (outage)" if unanswered else ""),
        metadata={
            "validity_rate": round(rate, 3),
            "min_rate": check.min_rate,
            "model_written": written,
            "extractive": extractive,
            "no_answer": unanswered,
            "failures": dg.MetadataValue.md(markdown_table(invalid[:10])),
            **per_partition(step, [(r, r["status"] in PUBLISHABLE, r.get("error") or "") for r in answered]),
        },
    )


def judge_rubric(
    context: dg.AssetCheckExecutionContext, step: LlmStep, check: StepCheck, rows: pd.DataFrame
) -> dg.AssetCheckResult:
    """The share of answers the judge passed, read from the rows' verdicts; rows that failed
    the schema count as failing the rubric too. A judge under its calibration floor proves
    nothing: the check does not pass, it reports `unjudged` (a warning, with the judge's
    measured accuracy), and the rows say `unjudged` rather than passed."""
    model: ModelResource = context.resources.model
    with model.session(context) as llm:  # its calls recorded as <asset>:<check>
        calibration = calibrate_judge(
            llm,
            tier=check.tier,  # type: ignore[arg-type]
            rubric=check.rubric,
            examples=step.examples(check),
        )
    judge = {**calibration.metadata(check.min_judge_accuracy), **llm.metadata()}
    records = rows.to_dict(orient="records") if len(rows) else []
    answered = [r for r in records if r.get("status") != "no_answer"]  # an outage is not a quality verdict
    if not calibration.proven(check.min_judge_accuracy):
        reason = calibration.unproven_reason(check.min_judge_accuracy)
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{UNJUDGED}: {reason}; {len(answered)} answers are not counted as meeting the rubric",
            metadata={"verdict": UNJUDGED, "reason": reason, "min_rate": check.min_rate, **judge},
        )
    key = step.key or (PARTITIONS[step.partitions][1] if step.partitions else "item")
    verdict_rows = [
        (
            r,
            r.get("rubric_verdict") == "passed",
            str(r.get("rubric_reason") or "") if r.get("status") in PUBLISHABLE else "no schema-valid answer",
        )
        for r in answered
    ]
    passed = sum(ok for _, ok, _ in verdict_rows)
    rate = passed / len(answered) if answered else 1.0
    not_passed = [
        {key: r.get(key, ""), "verdict": r.get("rubric_verdict") or r.get("status"), "reason": why}
        for r, ok, why in verdict_rows
        if not ok
    ]
    return dg.AssetCheckResult(
        passed=rate >= check.min_rate,
        severity=dg.AssetCheckSeverity.ERROR if check.blocking else dg.AssetCheckSeverity.WARN,
        description=f"{passed} of {len(answered)} answers meet the rubric (minimum {check.min_rate:.0%}), judged "
        f"by a judge with balanced accuracy {calibration.balanced_accuracy:.2f} on {calibration.examples} examples",
        metadata={
            "verdict": "judged",
            "pass_rate": round(rate, 3),
            "min_rate": check.min_rate,
            "not_passed": dg.MetadataValue.md(markdown_table(not_passed[:10])),
            **per_partition(step, verdict_rows),
            **judge,
        },
    )


def steps_in(tree: dg.ComponentTree) -> list[LlmStep]:
    return list(tree.get_all_components(of_type=LlmStep))


def check_inputs(steps: list[LlmStep], known: set[dg.AssetKey]) -> None:
    """Dagster would take an unknown input for an external asset and fail only at run time;
    a typo in `inputs` fails definition loading instead."""
    for step in steps:
        for name in step.inputs:
            if dg.AssetKey.from_user_string(name) not in known:
                raise step.input_line(name)


def load_steps(defs_module: ModuleType) -> tuple[dg.Definitions, list[LlmStep]]:
    """Every step declared under a defs module (a package of step folders), with Dagster's
    component loader, as the `dg` CLI loads them."""
    folder = Path(defs_module.__file__ or "").parent
    root = next((p for p in folder.parents if (p / "pyproject.toml").is_file()), folder.parent)
    tree = dg.ComponentTree.from_module(defs_module=defs_module, project_root=root)
    return tree.build_defs(), steps_in(tree)


def project_step_folder(name: str) -> Path:
    """The folder of one of the project's declared steps: assets/<pipeline>/steps/<name>/."""
    [path] = PIPELINES_DIR.glob(f"*/steps/{name}/defs.yaml")
    return path.parent


def project_step(name: str) -> LlmStep:
    return LlmStep.from_file(project_step_folder(name) / "defs.yaml")
