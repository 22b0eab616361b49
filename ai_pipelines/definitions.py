"""The code location: assets, checks, jobs, schedules and resources, configured from settings."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from types import ModuleType

from dagster import (
    AssetsDefinition,
    Definitions,
    EnvVar,
    ExecutorDefinition,
    FilesystemIOManager,
    in_process_executor,
    multiprocess_executor,
)

from ai_pipelines.instance import batch_event_writes
from ai_pipelines.settings import ENV_PREFIX, Settings, env_name, load_settings
from assets import ALL_ASSET_CHECKS, ALL_ASSETS, PIPELINES, STEP_MODULES
from assets.components.llm_step import check_inputs, load_steps
from resources import EmbeddingsResource, Endpoint, ModelResource, SpendCap, VectorStoreResource, WarehouseIOManager
from resources.mailer import MailerResource
from resources.pipeline_config import SAMPLE_CORPUS_DIR, SUPPORT_DESK_DIR, PipelineConfig, TriageConfig
from resources.support.support_desk import SupportDeskResource
from sensors import (
    ALL_JOBS,
    digest_schedule,
    inbox_sensor,
    index_automation,
    provider_batch_sensor,
    run_failure_recorder,
    ticket_inbox_sensor,
)


def _secret(variable: str, value: str) -> EnvVar | str:
    """A secret as a Dagster `EnvVar`, so that snapshots in the instance database and the
    UI's resource config hold the variable's name, never its value.

    A value that is not in the process environment under `variable` (read from `.env`,
    given in the fallbacks JSON, or passed to `Settings` directly) is exported there first.
    Every Dagster process that runs this code location (webserver, daemon, code server,
    run and step workers) loads these definitions, so each one can resolve it.
    """
    if not value:
        return ""
    if os.environ.get(variable) != value:
        os.environ[variable] = value
    return EnvVar(variable)


def fallback_key_variable(name: str) -> str:
    """Where a fallback endpoint's literal `api_key` is exported: AI_PIPELINES_LLM_FALLBACK_<NAME>_API_KEY."""
    return f"{ENV_PREFIX}LLM_FALLBACK_{re.sub(r'[^A-Z0-9]+', '_', name.upper()).strip('_')}_API_KEY"


def _fallback(options: dict[str, object]) -> Endpoint:
    """One fallback endpoint from the JSON setting, its key given as `api_key_env` (the name of
    a variable that holds it, resolved by Dagster in each process) or `api_key` (a literal, exported).

    Dagster keeps an `EnvVar` inside the nested `fallbacks: list[Endpoint]` config (pythonic
    config restores them after pydantic validation, `ensure_env_vars_set_post_init`, and
    snapshots them as {"env": name}); tests/test_secrets.py holds it to that.
    """
    fields = dict(options)
    variable = str(fields.pop("api_key_env", "") or "")
    if variable:
        fields["api_key"] = EnvVar(variable)
    elif fields.get("api_key"):
        fields["api_key"] = _secret(fallback_key_variable(str(fields.get("name", ""))), str(fields["api_key"]))
    return Endpoint(**fields)


def _state_location(settings: Settings, location: str) -> EnvVar | str:
    """The Postgres URL (it may hold a password) as a secret; a file path as it is."""
    return (
        _secret(ENV_PREFIX + "POSTGRES_URL", location)
        if settings.postgres_url and location == settings.postgres_url
        else location
    )


def _fields_from_settings(settings: Settings, resource: type) -> dict[str, object]:
    """The fields of `resource` that are settings (see `knob`), by field name, a secret as the
    EnvVar of its variable: the part of every resource's configuration nobody copies by hand."""
    fields: dict[str, object] = {}
    for name, knob in Settings.knobs().items():
        for owner, field in knob.targets:
            if owner is resource:
                value = getattr(settings, name)
                fields[field] = _secret(env_name(name), value) if knob.secret else value
    return fields


def build_resources(settings: Settings) -> dict[str, object]:
    """Each resource from the settings that are its fields, plus what the code location derives
    from its own settings: paths under the data directory, state in Postgres, the fallback chain,
    the auto switches and the nested resources. A field given both ways is a repeated keyword."""
    embeddings = EmbeddingsResource(**_fields_from_settings(settings, EmbeddingsResource))
    vector_store = VectorStoreResource(
        **_fields_from_settings(settings, VectorStoreResource),
        embeddings=embeddings,
        persist_dir=str(settings.chroma_dir),
    )
    return {
        "model": ModelResource(
            **_fields_from_settings(settings, ModelResource),
            fallbacks=[_fallback(e) for e in settings.llm_fallbacks],
            cache_path=_state_location(settings, settings.response_cache_location) if settings.llm_cache else "",
            trace_path=_state_location(settings, settings.trace_location),
            state_path=_state_location(settings, settings.gateway_state_location),
            spend_caps=[SpendCap(**cap) for cap in settings.llm_spend_caps],
        ),
        "vector_store": vector_store,
        "support_desk": SupportDeskResource(
            **_fields_from_settings(settings, SupportDeskResource),
            data_dir=str(settings.support_desk_dir or SUPPORT_DESK_DIR),
            vector_store=vector_store,
        ),
        "triage": TriageConfig(
            **_fields_from_settings(settings, TriageConfig),
            tickets_dir=str(settings.tickets_dir or SUPPORT_DESK_DIR / "tickets"),
            ticket_inbox_dir=str(settings.ticket_inbox_dir or settings.data_dir / "ticket_inbox"),
        ),
        "mailer": MailerResource(
            **_fields_from_settings(settings, MailerResource), maildir_path=str(settings.output_dir / "outbox")
        ),
        "pipeline": PipelineConfig(
            **_fields_from_settings(settings, PipelineConfig),
            corpus_dir=str(settings.corpus_dir or SAMPLE_CORPUS_DIR),
            inbox_dir=str(settings.inbox_dir or settings.data_dir / "inbox"),
            output_dir=str(settings.output_dir),
            state_url=_state_location(settings, settings.postgres_url),
            screen_with_model=settings.screens_with_model,
            decompose_claims=settings.decomposes_claims,
        ),
        "warehouse_io_manager": WarehouseIOManager(database=str(settings.warehouse_path), schema="ai_pipelines"),
        "io_manager": FilesystemIOManager(base_dir=str(settings.data_dir / "storage")),
    }


def _fingerprint(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]


def model_fingerprints(settings: Settings) -> dict[str, str]:
    """Per resource, the model configuration its users' outputs depend on."""
    return {
        "model": _fingerprint(
            [settings.llm_fast_model, settings.llm_strong_model]
            + [[e.get("fast_model"), e.get("strong_model")] for e in settings.llm_fallbacks]
        ),
        # The embedder places the passages and the retrieval mode ranks them: both shape what a search returns.
        "vector_store": _fingerprint([settings.embeddings_model, settings.retrieval_mode]),
    }


def with_model_versions(assets: list[AssetsDefinition], settings: Settings) -> list[AssetsDefinition]:
    """Appends the model fingerprints of the resources an asset uses to its code version,
    so that switching a model marks exactly the assets whose outputs it shapes stale."""
    fingerprints = model_fingerprints(settings)
    versioned = []
    for asset in assets:
        suffix = "".join(f"-{fingerprints[k]}" for k in sorted(fingerprints.keys() & asset.required_resource_keys))
        versioned.append(
            asset.map_asset_specs(lambda spec: spec.replace_attributes(code_version=f"{spec.code_version}{suffix}"))
            if suffix
            else asset
        )
    return versioned


def build_executor(settings: Settings) -> ExecutorDefinition:
    """In process by default, so every step shares one embedded model server. Celery and
    multiprocess give each step its own process: meant for remote model endpoints."""
    if settings.executor == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured({"broker": settings.celery_broker, "backend": settings.celery_backend})
    if settings.executor == "multiprocess":
        return multiprocess_executor
    return in_process_executor


def build_definitions(settings: Settings, step_modules: Sequence[ModuleType] = STEP_MODULES) -> Definitions:
    """The code location: the Python-declared assets and the steps declared in YAML under
    `step_modules` (each pipeline's `steps/` package; tests add their own)."""
    batch_event_writes(settings.event_batch_size)
    loaded = [load_steps(module) for module in step_modules]
    step_assets = [a for step_defs, _ in loaded for a in step_defs.assets or [] if isinstance(a, AssetsDefinition)]
    step_checks = [c for step_defs, _ in loaded for c in step_defs.asset_checks or []]
    for pipeline in PIPELINES:
        if pipeline.steps in step_modules:
            step_defs, _ = loaded[list(step_modules).index(pipeline.steps)]
            own_steps = [a for a in step_defs.assets or [] if isinstance(a, AssetsDefinition)]
        else:
            own_steps = []
        pipeline.check_groups([*pipeline.assets, *own_steps])
    check_inputs(
        [s for _, declared in loaded for s in declared], {k for a in [*ALL_ASSETS, *step_assets] for k in a.keys}
    )
    return Definitions(
        assets=with_model_versions([*ALL_ASSETS, *step_assets], settings),
        asset_checks=[*ALL_ASSET_CHECKS, *step_checks],
        jobs=ALL_JOBS,
        schedules=[digest_schedule(settings.digest_cron, settings.timezone)],
        sensors=[
            inbox_sensor,
            ticket_inbox_sensor,
            index_automation,
            provider_batch_sensor,
            run_failure_recorder(str(settings.output_dir / "run_failures.jsonl"), settings.failure_webhook_url),
        ],
        resources=build_resources(settings),
        executor=build_executor(settings),
    )


defs = build_definitions(load_settings())
