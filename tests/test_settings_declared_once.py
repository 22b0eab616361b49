"""Every setting is declared once. A knob's default, bound and description live on the resource
field it sets, and the setting copies that declaration (`knob`); what only the code location uses
is declared in `Settings`. `build_resources` copies no field by hand: each resource field is a
setting or derived from named settings, and `.env.example` is written from the declarations."""

import os
import re
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types
import pytest
from dagster import EnvVar
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from ai_pipelines.definitions import build_resources
from ai_pipelines.settings import ENV_PREFIX, Settings, env_example, env_name, load_settings
from resources.embeddings import EmbeddingsResource
from resources.gateway.config import Endpoint
from resources.gateway.model import ModelResource
from resources.mailer import MailerResource
from resources.pipeline_config import PipelineConfig, TriageConfig
from resources.support.agent import AgentLimits
from resources.support.support_desk import SupportDeskResource
from resources.vector_store import VectorStoreResource

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parent.parent
RESOURCES: dict[type[BaseModel], str] = {
    ModelResource: "model",
    VectorStoreResource: "vector_store",
    EmbeddingsResource: "vector_store.embeddings",
    SupportDeskResource: "support_desk",
    TriageConfig: "triage",
    MailerResource: "mailer",
    PipelineConfig: "pipeline",
}
# Resource fields that are no setting of their own: what build_resources derives them from.
DERIVED: dict[tuple[type[BaseModel], str], tuple[str, ...]] = {
    (ModelResource, "fallbacks"): ("llm_fallbacks",),  # JSON, with keys turned into EnvVars
    (ModelResource, "cache_path"): ("llm_cache", "data_dir", "postgres_url"),
    (ModelResource, "trace_path"): ("data_dir", "postgres_url"),
    (ModelResource, "state_path"): ("data_dir", "postgres_url"),
    (ModelResource, "spend_caps"): ("llm_spend_caps",),  # JSON, as SpendCap
    (VectorStoreResource, "persist_dir"): ("data_dir",),
    (VectorStoreResource, "embeddings"): (),  # the embeddings resource, built from its settings
    (SupportDeskResource, "data_dir"): ("support_desk_dir",),
    (SupportDeskResource, "vector_store"): (),
    (TriageConfig, "tickets_dir"): ("tickets_dir",),
    (TriageConfig, "ticket_inbox_dir"): ("ticket_inbox_dir", "data_dir"),
    (MailerResource, "maildir_path"): ("data_dir",),
    (PipelineConfig, "corpus_dir"): ("corpus_dir",),
    (PipelineConfig, "inbox_dir"): ("inbox_dir", "data_dir"),
    (PipelineConfig, "output_dir"): ("data_dir",),
    (PipelineConfig, "state_url"): ("postgres_url",),
    (PipelineConfig, "screen_with_model"): ("screen_with_model", "llm_base_url"),  # auto/on/off resolved
    (PipelineConfig, "decompose_claims"): ("decompose_claims", "llm_base_url"),
}
# Settings no resource has a field for, and where the code location reads them.
LOCATION = {
    "executor": "build_executor",
    "celery_broker": "build_executor and the stack",
    "celery_backend": "build_executor",
    "max_concurrent_runs": "the stack's run queue",
    "model_pool_limit": "the stack's model_endpoints pool",
    "event_batch_size": "build_definitions",
    "failure_webhook_url": "the run_failure_recorder sensor",
    "digest_cron": "the digest schedule",
    "timezone": "the digest schedule",
}
# One declaration used by two classes: the second names the first in its source.
REUSED = [
    *(
        (ModelResource, name, Endpoint, name)
        for name in ("base_url", "api_key", "fast_model", "strong_model", "timeout_seconds", "max_input_chars")
    ),
    *(
        (TriageConfig, f"agent_{name}", AgentLimits, name)
        for name in ("max_iterations", "max_tool_calls", "max_tokens", "max_seconds")
    ),
    (TriageConfig, "refund_limit_eur", SupportDeskResource, "refund_limit_eur"),
]
# A value for a derived setting's other side, to show the derived field follows it.
CHANGED = {
    "data_dir": Path("elsewhere"),
    "corpus_dir": Path("my_corpus"),
    "inbox_dir": Path("my_inbox"),
    "tickets_dir": Path("my_tickets"),
    "ticket_inbox_dir": Path("my_ticket_inbox"),
    "support_desk_dir": Path("my_desk"),
    "llm_fallbacks": [{"name": "backup", "base_url": "http://127.0.0.1:9/v1"}],
    "llm_cache": False,
    "llm_spend_caps": [{"name": "daily-usd", "usd": 5}],
    "postgres_url": "postgresql+psycopg2://postgres@127.0.0.1:5432/elsewhere",
    "screen_with_model": "on",
    "decompose_claims": "on",
    "llm_base_url": "http://127.0.0.1:9/v1",
}
BOUNDS = (annotated_types.Ge, annotated_types.Gt, annotated_types.Le, annotated_types.Lt)


def declaration(info: FieldInfo) -> tuple[Any, list[Any], str | None]:
    """What a declaration says: default, bounds and description (markers such as NoDecode aside)."""
    return info.default, [m for m in info.metadata if isinstance(m, annotated_types.BaseMetadata)], info.description


def built(settings: Settings) -> dict[type[BaseModel], BaseModel]:
    resources = build_resources(settings)
    found: dict[type[BaseModel], BaseModel] = {}
    for cls, path in RESOURCES.items():
        value: Any = resources
        for part in path.split("."):
            value = value[part] if isinstance(value, dict) else getattr(value, part)
        found[cls] = value
    return found


def targets() -> dict[tuple[type[BaseModel], str], str]:
    """Resource field -> the setting that sets it."""
    return {target: name for name, knob in Settings.knobs().items() for target in knob.targets}


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No AI_PIPELINES_ variable nor .env of the machine's; what the test sets is undone after it."""
    for variable in [v for v in os.environ if v.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(variable)
    for name in Settings.model_fields:  # build_resources exports secrets: restore them afterwards
        monkeypatch.setenv(env_name(name), "")
        monkeypatch.delenv(env_name(name))
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_a_setting_that_sets_a_field_is_that_fields_declaration():
    for name, knob in Settings.knobs().items():
        setting = Settings.model_fields[name]
        for owner, field in knob.targets:
            declared = owner.model_fields[field]
            assert declaration(setting) == declaration(declared), f"{name} restates {owner.__name__}.{field}"
            assert setting.annotation == declared.annotation, f"{name}: {setting.annotation} vs {declared.annotation}"
    assert len(targets()) == sum(len(k.targets) for k in Settings.knobs().values()), "a field set by two settings"


def test_a_declaration_used_twice_is_one_declaration():
    for cls, name, origin, origin_name in REUSED:
        assert declaration(cls.model_fields[name]) == declaration(origin.model_fields[origin_name]), (
            f"{cls.__name__}.{name}"
        )
    # Fields that share a description are the same knob: they must not disagree on default or bound.
    seen: dict[str, tuple[str, Any]] = {}
    for cls in [*RESOURCES, Endpoint, AgentLimits, Settings]:
        for name, info in cls.model_fields.items():
            if info.description:
                where, said = seen.setdefault(info.description, (f"{cls.__name__}.{name}", declaration(info)))
                assert said == declaration(info), f"{cls.__name__}.{name} and {where} say it differently"


def test_every_setting_is_a_field_a_derivation_or_the_locations_own():
    knobs = set(Settings.knobs())
    derived_from = {source for sources in DERIVED.values() for source in sources}
    own = set(Settings.model_fields) - knobs
    assert own == (derived_from - knobs) | set(LOCATION), "a setting with no documented use, or a use of no setting"
    assert not knobs & set(LOCATION)
    code = "".join(path.read_text() for path in (ROOT / "ai_pipelines").glob("*.py"))
    for name in LOCATION:
        assert f"settings.{name}" in code, f"{name} is read nowhere"
    for name, info in Settings.model_fields.items():
        assert info.description, f"{name} has no description"


def test_build_resources_sets_every_field_from_one_place(clean_env):
    settings = Settings(_env_file=None)
    by_setting = targets()
    for cls, resource in built(settings).items():
        fields = set(cls.model_fields)
        assert resource.model_fields_set == fields, (
            f"{cls.__name__}: {fields - resource.model_fields_set} left at default"
        )
        knobs = {field for (owner, field) in by_setting if owner is cls}
        assert fields - knobs == {field for (owner, field) in DERIVED if owner is cls}, cls.__name__
        for field in knobs:
            if not Settings.knobs()[by_setting[cls, field]].secret:
                assert getattr(resource, field) == getattr(settings, by_setting[cls, field]), f"{cls.__name__}.{field}"


def test_derived_fields_follow_their_settings(clean_env, tmp_path):
    base = Settings(_env_file=None, data_dir=tmp_path / "data")
    before = built(base)
    for (cls, field), sources in DERIVED.items():
        for source in sources:
            after = built(base.model_copy(update={source: CHANGED[source]}))
            assert _plain(getattr(after[cls], field)) != _plain(getattr(before[cls], field)), (
                f"{cls.__name__}.{field} does not follow {source}"
            )


def _plain(value: Any) -> Any:
    """An EnvVar as its variable's name (comparing or printing one reads the environment)."""
    return ("env", str.__str__(value)) if isinstance(value, EnvVar) else value


def test_every_knob_has_a_variable_that_reaches_its_resource(clean_env):
    wanted: dict[str, Any] = {}
    for name, info in Settings.model_fields.items():
        if name in Settings.knobs():
            wanted[name] = _another_value(name, info)
            clean_env.setenv(env_name(name), _as_variable(wanted[name]))
    settings = load_settings()
    resources = built(settings)
    for (cls, field), name in targets().items():
        value = getattr(resources[cls], field)
        if Settings.knobs()[name].secret:
            assert _plain(value) == ("env", env_name(name)) and os.environ[env_name(name)] == wanted[name]
        else:
            assert value == wanted[name], f"{env_name(name)} does not reach {cls.__name__}.{field}"


def test_the_former_name_of_the_route_confidence_is_still_read(clean_env):
    clean_env.setenv(ENV_PREFIX + "ROUTE_MIN_CONFIDENCE", "0.55")
    assert built(load_settings())[TriageConfig].min_route_confidence == 0.55
    clean_env.setenv(ENV_PREFIX + "MIN_ROUTE_CONFIDENCE", "0.65")
    assert load_settings().min_route_confidence == 0.65


def test_every_number_has_a_bound():
    for cls in [Settings, *RESOURCES]:
        for name, info in cls.model_fields.items():
            if info.annotation in (int, float):
                assert any(isinstance(m, BOUNDS) for m in info.metadata), f"{cls.__name__}.{name} is unbounded"


def test_env_example_is_written_from_the_declarations():
    assert (ROOT / ".env.example").read_text() == env_example(), (
        "regenerate it: .venv/bin/python -m ai_pipelines.settings > .env.example"
    )


def test_env_example_holds_every_setting_with_its_default_and_description(clean_env):
    text = (ROOT / ".env.example").read_text()
    named = re.findall(rf"^#?\s*({ENV_PREFIX}[A-Z0-9_]+)=", text, flags=re.M)
    assert sorted(named) == sorted(env_name(name) for name in Settings.model_fields), "unknown or missing variables"
    assert Settings(_env_file=ROOT / ".env.example") == Settings(_env_file=None), "a default differs"
    lines = text.splitlines()
    for name, info in Settings.model_fields.items():
        at = next(i for i, line in enumerate(lines) if re.match(rf"^#?\s*{env_name(name)}=", line))
        above = []
        for line in reversed(lines[:at]):
            if not line.startswith("# ") or re.match(rf"^#\s*{ENV_PREFIX}[A-Z0-9_]+=", line):
                break
            above.insert(0, line[2:])
        assert " ".join(above) == " ".join(info.description.split()), (
            f"{env_name(name)}: its description is not above it"
        )


def _another_value(name: str, info: FieldInfo) -> Any:
    """A valid value other than the default, for the variable test."""
    default, kind = info.default, info.annotation
    if name == "agent_mcp_servers":
        return '[{"name": "desk", "url": "http://127.0.0.1:9/mcp"}]'
    if get_origin(kind) is Literal:
        return next(choice for choice in get_args(kind) if choice != default)
    if kind is bool:
        return not default
    if kind is int:
        return default + 1
    if kind is float:
        top = next((m.le for m in info.metadata if isinstance(m, annotated_types.Le)), default + 3)
        return (default + top) / 2
    if kind == list[str]:
        return ["Acme", "Globex"]
    return f"x-{name}"


def _as_variable(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)
