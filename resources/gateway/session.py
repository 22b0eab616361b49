"""A model session: the one way to call a model, and the bookkeeping of its calls.

Every asset that calls a model needs the same things around its calls: a ledger labelled
with the run and the asset (so that trace rows name them and the run's budget counts them),
progress in the run's log for long fan-outs, and the usage figures in the materialization's
metadata, per partition when the step materializes several. Written once here, as
dagster-openai does with `get_client(context)`, an asset says only what it asks:

    with model.session(context) as llm:
        answers = llm.map_traced_structured(requests, Schema, tier="fast", partitions=keys)

On exit the session writes the usage metadata itself, also when the body raised (the step
fails with the body's exception; the figures are then logged, since a failed step records
no materialization). The block must end before the asset yields its outputs: Dagster takes
an output's metadata when it is yielded. Library code takes the session, never the resource,
so its calls land in the same figures. Outside a run (the CLI, evaluations, benchmarks,
tests) `model.open_session()` gives a session whose ledger the caller reads.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Callable, Sequence, TypeVar

from pydantic import BaseModel

from resources.gateway.config import GatewayConfig, Tier
from resources.gateway.errors import ModelCallError
from resources.gateway.gateway import Gateway
from resources.gateway.ledger import BranchLedger, CallLedger, CallRecord
from resources.gateway.progress import ProgressLog
from resources.gateway.provider_batches import BatchPending, BatchScope
from resources.gateway.request import ContextOverflow, Messages, ModelRequest
from resources.gateway.step_usage import StepUsage, tier_comparison, usage_metadata
from resources.gateway.tool_turns import AgentTurn, ToolStep
from resources.gateway.validation import InvalidAnswers

T = TypeVar("T", bound=BaseModel)
LOG = logging.getLogger("ai_pipelines.model")


class ModelSession:
    """The gateway's calls for one computation, every one recorded in `ledger`."""

    def __init__(
        self,
        gateway: Gateway,
        ledger: CallLedger,
        step: StepUsage | None = None,
        compare_tiers: bool = False,
        log: Any = None,
        batching: BatchScope | None = None,
    ) -> None:
        """`step` is where the figures go when the session ends (none for a session outside a
        run); `compare_tiers` adds what the calls would have cost on the strong tier; `batching`,
        given when the step allows provider batches, says for which run and asset they are."""
        self.ledger = ledger
        self._batching = batching
        self._gateway = gateway
        self._step = step
        self._compare_tiers = compare_tiers
        self._log = log or (step.log if step is not None else LOG)
        self._invalid = InvalidAnswers()

    @property
    def config(self) -> GatewayConfig:
        """The gateway's declared settings: its endpoints and models, for fingerprints and keys."""
        return self._gateway.config

    def __enter__(self) -> ModelSession:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> bool:
        if self._step is not None and not isinstance(error, BatchPending):  # waiting is not failing
            self._step.close(self.ledger, self.metadata, error)
        return False

    def beside(self, part: str) -> ModelSession:
        """A session for calls of the same computation whose figures are reported apart (a
        judge's calibration, say): the same run, a ledger of its own named `<asset>:<part>`."""
        ledger = CallLedger(run_id=self.ledger.run_id, asset=f"{self.ledger.asset}:{part}")
        return ModelSession(self._gateway, ledger, log=self._log)

    def branch(self) -> ModelSession:
        """A session for one part of this computation (one item's calls) whose ledger holds only
        that part's calls, each also recorded in this session's: what the part cost, read apart."""
        part = ModelSession(self._gateway, BranchLedger(self.ledger), log=self._log)
        part._invalid = self._invalid  # the same computation: what stayed invalid is not asked again
        return part

    # --- calls ------------------------------------------------------------------------------------

    def answer(self, request: ModelRequest) -> tuple[Any, CallRecord]:
        """The validated answer to `request` (an instance of its `output`) and the record of its call.

        Each endpoint of the chain in turn: an invalid answer is re-asked there with its
        validation error, up to `max_reasks` times; an endpoint that failed (errors after
        retries, or answers that stayed invalid) counts against its breaker and the next one
        is tried. Raises `ModelCallError` (`StructuredOutputError` when some endpoint answered
        invalidly) with the reason per endpoint."""
        return self._gateway.complete(request, self.ledger, self._invalid)

    def structured(self, messages: Messages, schema: type[T], **options: Any) -> T:
        """A validated `schema` instance (options as for `request`)."""
        return self.traced_structured(messages, schema, **options)[0]

    def request(
        self,
        messages: Messages,
        schema: type[BaseModel],
        *,
        tier: Tier = "fast",
        max_tokens: int = 256,
        partition: str = "",
        temperature: float | None = None,
        sample: int = 0,
        context_overflow: ContextOverflow = "fallback",
    ) -> ModelRequest:
        """The request `traced_structured` asks with these options (for `offer_batch`, then `answer`).

        `temperature` overrides the gateway's for this request; `sample` numbers otherwise
        identical requests (the samples of a vote), so each is cached apart; `context_overflow`
        "cut" lets a prompt no endpoint's context window takes be cut to fit, rather than fail."""
        return ModelRequest(
            messages=messages,
            output=schema,
            tier=tier,
            max_tokens=max_tokens,
            temperature=self.config.temperature if temperature is None else temperature,
            partition=partition,
            sample=sample,
            context_overflow=context_overflow,
        )

    def offer_batch(self, requests: Sequence[ModelRequest]) -> None:
        """Offers a step's requests to the provider batch API before they are asked: returns when
        they are to be asked live (the step allows no batches, too few requests lack an answer, this
        run reads a batch's answers), raises `BatchPending` when batches hold them (see
        provider_batches). Call it with all of a step's requests at once."""
        if self._batching is not None:
            self._gateway.batches.offer(requests, self._batching, self._log)

    def traced_structured(self, messages: Messages, schema: type[T], **options: Any) -> tuple[T, str]:
        """A validated `schema` instance and the trace id of the call that produced it (options as
        for `request`)."""
        value, record = self.answer(self.request(messages, schema, **options))
        return value, record.trace_id

    def tool_step(
        self,
        messages: Messages,
        tools: Sequence[dict[str, Any]],
        *,
        tier: Tier = "strong",
        max_tokens: int = 512,
        partition: str = "",
    ) -> ToolStep:
        """One turn of a tool-using conversation (OpenAI function calling), on the same reliable
        path as structured answers. The caller runs the tools and continues the conversation."""
        request = ModelRequest(
            messages=messages,
            output=AgentTurn,
            tier=tier,
            max_tokens=max_tokens,
            temperature=self.config.temperature,
            tools=list(tools),
            partition=partition,
        )
        turn, record = self.answer(request)
        return ToolStep(
            turn=turn,
            trace_id=record.trace_id,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            cache_hit=record.cache_hit,
        )

    def map_structured(self, requests: Sequence[Messages], schema: type[T], **options: Any) -> list[T | Exception]:
        """Many requests at bounded concurrency; one failure never loses the others."""
        return [value for value, _ in self.map_traced_structured(requests, schema, **options)]

    def map_traced_structured(
        self,
        requests: Sequence[Messages],
        schema: type[T],
        *,
        tier: Tier = "fast",
        max_tokens: int = 256,
        on_done: Callable[[], None] | None = None,
        partitions: Sequence[str] | None = None,
        context_overflow: ContextOverflow = "fallback",
    ) -> list[tuple[T | Exception, str]]:
        """`map_structured` with each accepted answer's trace id ("" for failures).

        `partitions`, parallel to `requests`, labels each request's records with the partition
        it is for, which is what per-partition metadata is made from. `on_done` is called as
        each request finishes (for progress). A spent budget is not a per-item failure: it
        propagates and stops the step."""
        labels = list(partitions) if partitions is not None else [""] * len(requests)
        if len(labels) != len(requests):
            raise ValueError(f"{len(labels)} partitions for {len(requests)} requests")
        if self._batching is not None:
            options = {"tier": tier, "max_tokens": max_tokens, "context_overflow": context_overflow}
            self.offer_batch([self.request(m, schema, partition=p, **options) for m, p in zip(requests, labels)])

        def one(item: tuple[Messages, str]) -> tuple[T | Exception, str]:
            messages, partition = item
            try:
                return self.traced_structured(
                    messages,
                    schema,
                    tier=tier,
                    max_tokens=max_tokens,
                    partition=partition,
                    context_overflow=context_overflow,
                )
            except ModelCallError as exc:
                return exc, ""
            finally:
                if on_done is not None:
                    on_done()

        with ThreadPoolExecutor(max_workers=max(1, self.config.max_concurrency)) as pool:
            return list(pool.map(one, zip(requests, labels)))

    # --- bookkeeping ------------------------------------------------------------------------------

    def progress(self, label: str, total: int) -> ProgressLog:
        """A progress logger for `total` items in the run's log, to pass as `on_done`; one
        shared by several calls counts them all."""
        return ProgressLog(self._log, label, total)

    def metadata(self, partition: str | None = None) -> dict[str, object]:
        """The usage metadata of every call so far, or of one partition's calls."""
        figures = usage_metadata(self.ledger, self._gateway, partition)
        if self._batching is not None and self._batching.follow_up:
            figures.update(self._batch_figures(self._batching.follow_up, partition))
        if self._compare_tiers:
            figures.update(tier_comparison(self.ledger, self.config, partition))
        return figures

    def _batch_figures(self, batch_id: str, partition: str | None) -> dict[str, object]:
        """A follow-up run's part of a provider batch: what the batch answered and cost (at the
        batch price, beside this run's own `cost_usd`), and what this run had to ask live."""
        batch = self._gateway.batches.figures(batch_id, partition)
        summary = self.ledger.summary(partition=partition)
        return {
            "provider_batch": batch_id,
            "batch_answers": batch.answered,
            "batch_cost_usd": batch.cost_usd,
            "batch_live_requests": summary.requests - summary.cache_hits,
        }

    # --- what the gateway can tell ----------------------------------------------------------------

    def breaker_states(self) -> dict[str, str]:
        """Each endpoint's circuit: closed, open or half_open."""
        return self._gateway.breaker_states()

    def endpoint_paces(self) -> dict[str, float]:
        """The measured tokens/s of each endpoint that takes its deadlines from the work."""
        return self._gateway.endpoint_paces()

    def spent(self) -> dict[str, float]:
        """What this session's run has spent ("usd", "tokens"), as its budget is checked against."""
        return self._gateway.spent(self.ledger.run_id)

    def trace_records(self, trace_ids: list[str]) -> list[dict[str, object]]:
        """The trace table rows of these calls (those the table still holds)."""
        return self._gateway.trace_records(trace_ids)

    def flush_telemetry(self) -> None:
        """Send the spans recorded so far to the collector (they go in batches)."""
        self._gateway.flush_telemetry()
