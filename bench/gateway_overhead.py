"""Benchmark scenario 2: what the model gateway adds to each call, over the call itself.

`ModelSession.traced_structured` wraps every chat call of the pipeline in routing over
the fallback chain, a response-cache lookup (and a write after the answer), token and
cost accounting, a trace row, a circuit breaker, a bulkhead, tenacity retries and
pydantic validation. The figure here is what all that costs per call: the median (and
p99) latency of a gateway call minus that of a bare `openai` client call with the same
body to the same server, at concurrency 1 and 16. LiteLLM's `Router`, configured with
the same fallback chain (a primary and one fallback deployment) and the same number of
retries, is measured the same way, as what an off-the-shelf gateway costs.

The server is `FakeOpenAI` over real HTTP on 127.0.0.1 with latency 0, in a process of
its own (`RemoteFakeOpenAI`): its handling time is common to the three clients and
cancels out of the difference, no model time hides the client side, and it does not
share this process's interpreter lock. At concurrency 16 the clients' own threads still
share one lock (two cores here), so there the figure includes what each call's CPU time
costs the other fifteen, which is what it costs a run worker too. Every request is distinct (a counter in the message), so
the gateway's cache misses every time: a cache hit is not a call, and a figure made of
hits would hide the write-through half of the cache. Each call is timed on its own
(16 threads of a ThreadPoolExecutor at concurrency 16; LiteLLM through its sync
`router.completion` in the same threads) after a few untimed warm-up calls per thread,
and the clients take turns in rounds so that load from elsewhere on the machine falls
on all three alike. Answers are checked after the clock stops; a run with any failed,
invalid, retried or fallen-back call raises `BenchmarkFailed`, since a benchmark of
failing calls is worthless.

    .venv/bin/python bench/gateway_overhead.py [calls per client and concurrency, default 300]
"""

from __future__ import annotations

import itertools
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

if __package__ in (None, ""):  # run as a script: bench/ and tests/ are packages of the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openai import OpenAI
from pydantic import BaseModel, ValidationError

from bench.table import BenchmarkFailed, Row, print_rows
from resources import Endpoint, ModelResource, ModelSession
from resources.gateway.request import response_format_for
from tests.fake_openai import RemoteFakeOpenAI

SCENARIO = "gateway overhead"
CONCURRENCIES = (1, 16)
ROUNDS = 5  # the clients take turns this many times per concurrency
WARMUP_PER_THREAD = 3
TARGET_US = 500.0
PRIMARY_MODEL, BACKUP_MODEL = "bench-fast", "bench-fast-backup"
MAX_TOKENS = 256

Messages = list[dict[str, str]]
Statistic = Literal["median", "p99"]


class Label(BaseModel):
    label: str


EXPECTED = Label(label="ok")


@dataclass(frozen=True)
class Client:
    """One way to make a call: `call` is what the clock measures; `answer` reads its answer's
    JSON text from what `call` returned, after the clock has stopped."""

    name: str
    call: Callable[[Messages], Any]
    answer: Callable[[Any], str]


@dataclass(frozen=True)
class Latencies:
    median_us: float
    p99_us: float

    @classmethod
    def of(cls, samples_us: list[float]) -> "Latencies":
        return cls(statistics.median(samples_us), statistics.quantiles(samples_us, n=100, method="inclusive")[98])

    def get(self, statistic: Statistic) -> float:
        return self.median_us if statistic == "median" else self.p99_us


def chat_body() -> dict[str, Any]:
    """What the gateway sends besides model and messages, so the other clients send the same."""
    return {"response_format": response_format_for(Label), "max_tokens": MAX_TOKENS, "temperature": 0.0}


def content_of(response: Any) -> str:
    return response.choices[0].message.content or ""


def direct_client(server: RemoteFakeOpenAI) -> Client:
    client = OpenAI(base_url=server.base_url, api_key="not-needed", max_retries=0)
    body = chat_body()
    return Client(
        "direct openai",
        lambda messages: client.chat.completions.create(model=PRIMARY_MODEL, messages=messages, **body),
        content_of,
    )


def gateway(server: RemoteFakeOpenAI, state_dir: Path) -> ModelResource:
    """Built as `build_resources` builds it in production: a fallback chain, cache and traces on."""
    return ModelResource(
        base_url=server.base_url,
        fast_model=PRIMARY_MODEL,
        strong_model=PRIMARY_MODEL,
        fallbacks=[
            Endpoint(name="backup", base_url=server.base_url, fast_model=BACKUP_MODEL, strong_model=BACKUP_MODEL)
        ],
        cache_path=str(state_dir / "responses.sqlite"),
        trace_path=str(state_dir / "traces.sqlite"),
        max_concurrency=max(CONCURRENCIES),
    )


def gateway_client(llm: ModelSession) -> Client:
    return Client(
        "ai-pipelines gateway",
        lambda messages: llm.traced_structured(messages, Label, tier="fast"),
        lambda result: result[0].model_dump_json(),
    )


def import_litellm() -> Any:
    """LiteLLM, offline: its cost map from the package (not fetched at import), no callbacks."""
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ["LITELLM_OFFLINE_MODE"] = "True"
    try:
        import litellm
    except ImportError as exc:
        raise BenchmarkFailed("litellm is not installed: install with pip install -e '.[bench]'") from exc
    for callbacks in (
        "callbacks",
        "input_callback",
        "success_callback",
        "failure_callback",
        "service_callback",
        "_async_input_callback",
        "_async_success_callback",
        "_async_failure_callback",
    ):
        setattr(litellm, callbacks, [])
    litellm.suppress_debug_info = True
    return litellm


def litellm_client(server: RemoteFakeOpenAI, model: ModelResource) -> Client:
    """A `Router` with the gateway's fallback chain and retries, called through its sync API."""
    litellm = import_litellm()

    def deployment(name: str, model_name: str) -> dict[str, Any]:
        params = {"model": f"openai/{model_name}", "api_base": server.base_url, "api_key": "not-needed"}
        return {"model_name": name, "litellm_params": params}

    router = litellm.Router(
        model_list=[deployment("primary", PRIMARY_MODEL), deployment("backup", BACKUP_MODEL)],
        fallbacks=[{"primary": ["backup"]}],
        num_retries=model.max_retries,
        timeout=model.timeout_seconds,
    )
    body = chat_body()
    return Client(
        "LiteLLM Router", lambda messages: router.completion(model="primary", messages=messages, **body), content_of
    )


class Run:
    """The calls of one client at one concurrency: each one's latency, and what went wrong."""

    def __init__(self, client: Client, server: RemoteFakeOpenAI, numbers: Callable[[], int]) -> None:
        self.client, self.server, self.numbers = client, server, numbers
        self.samples_us: list[float] = []
        self.failures: list[str] = []

    def one(self, record: bool) -> None:
        messages = [{"role": "user", "content": f"Label request {self.numbers()}."}]
        started = time.perf_counter_ns()
        try:
            result = self.client.call(messages)
        except Exception as exc:  # every failure voids the run; count them all
            self.failures.append(f"{type(exc).__name__}: {exc}")
            return
        elapsed_us = (time.perf_counter_ns() - started) / 1000
        text = self.answer_text(result)
        try:
            valid = Label.model_validate_json(text) == EXPECTED
        except ValidationError:
            valid = False
        if not valid:
            self.failures.append(f"invalid answer: {text:.200}")
        elif record:
            self.samples_us.append(elapsed_us)

    def answer_text(self, result: Any) -> str:
        try:
            return self.client.answer(result)
        except (AttributeError, IndexError, TypeError):  # no answer where one should be
            return repr(result)

    def batch(self, calls: int, concurrency: int, record: bool = True) -> None:
        """`calls` calls from `concurrency` threads; the server must see exactly these, all to the primary."""
        seen = len(self.server.calls)
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(lambda _: self.one(record), range(calls)))
        sent = self.server.calls[seen:]
        if len(sent) != calls:
            self.failures.append(f"{calls} calls made {len(sent)} requests (retries or cache hits)")
        if any(call["model"] != PRIMARY_MODEL for call in sent):
            self.failures.append("some calls went to the fallback model")

    def check(self) -> Latencies:
        if self.failures:
            raise BenchmarkFailed(
                f"{self.client.name}: {len(self.failures)} failed or invalid calls; first: {self.failures[0]}"
            )
        return Latencies.of(self.samples_us)


def measure_concurrency(
    clients: list[Client], server: RemoteFakeOpenAI, calls: int, concurrency: int, numbers: Callable[[], int]
) -> dict[str, Latencies]:
    """Each client's latencies at one concurrency, the clients taking turns in `ROUNDS` rounds."""
    runs = [Run(client, server, numbers) for client in clients]
    for run in runs:
        run.batch(WARMUP_PER_THREAD * concurrency, concurrency, record=False)
    shares = [calls // ROUNDS + (1 if r < calls % ROUNDS else 0) for r in range(ROUNDS)]
    for share in filter(None, shares):
        for run in runs:
            run.batch(share, concurrency)
    return {run.client.name: run.check() for run in runs}


def fmt(us: float) -> str:
    return f"{us:.0f} us"


def rows_for(concurrency: int, latencies: dict[str, Latencies]) -> list[Row]:
    """Per concurrency: the gateway's overhead over a bare call, and LiteLLM Router's beside it."""
    direct, ours, theirs = (latencies[n] for n in ("direct openai", "ai-pipelines gateway", "LiteLLM Router"))
    overhead = {s: ours.get(s) - direct.get(s) for s in ("median", "p99")}
    litellm = {s: theirs.get(s) - direct.get(s) for s in ("median", "p99")}
    return [
        Row(
            scenario=SCENARIO,
            measure=f"ai-pipelines gateway, concurrency {concurrency}",
            value=f"{fmt(overhead['median'])} median ({fmt(overhead['p99'])} p99)",
            baseline=f"bare openai call: {fmt(direct.get('median'))} median",
            target=f"<= {TARGET_US:.0f} us median",
            met=overhead["median"] <= TARGET_US,
        ),
        Row(
            scenario=SCENARIO,
            measure=f"LiteLLM Router, concurrency {concurrency}",
            value=f"{fmt(litellm['median'])} median ({fmt(litellm['p99'])} p99)",
            baseline=f"ai-pipelines gateway: {fmt(overhead['median'])} median",
            ratio=overhead["median"] / litellm["median"] if litellm["median"] > 0 else None,
            target="gateway < Router",
            met=overhead["median"] < litellm["median"],
        ),
    ]


def measure(calls: int) -> list[Row]:
    """Rows of per-call overhead (median and p99) at concurrency 1 and 16, `calls` timed calls per client each."""
    if calls < 2:
        raise ValueError(f"a p99 needs at least 2 calls, not {calls}")
    counter = itertools.count()
    with (
        RemoteFakeOpenAI(answers={Label.__name__: EXPECTED.model_dump()}) as server,
        tempfile.TemporaryDirectory() as state_dir,
    ):
        model = gateway(server, Path(state_dir))
        llm = model.open_session(run_id="bench", asset="gateway_overhead")
        clients = [direct_client(server), gateway_client(llm), litellm_client(server, model)]
        rows = []
        for concurrency in CONCURRENCIES:
            rows += rows_for(concurrency, measure_concurrency(clients, server, calls, concurrency, counter.__next__))
        usage = llm.ledger.summary()
        if usage.cache_hits or usage.retries or usage.fallbacks or usage.failed_calls:
            raise BenchmarkFailed(f"the gateway's ledger shows calls that were not plain misses: {usage}")
        return rows


if __name__ == "__main__":
    sys.exit(print_rows(lambda: measure(int(sys.argv[1]) if len(sys.argv) > 1 else 300)))
