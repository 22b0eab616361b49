"""One Dagster run that makes many fast-tier calls under a daily spend cap, in a process of its
own: two started at once are two runs sharing the cap through the state store, as concurrent
runs, celery workers and sensors do.

    python -m tests.spend_cap_runs <base_url> <state_path> <cap_usd> <requests> <out.json>

The process prints "ready" once Dagster is imported and waits for a line on stdin, so that a
test can start both runs' calls at the same moment. It writes what the run did to out.json:
whether it succeeded, its failure, every refusal's message and the totals of its ledger.
"""

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dagster import AssetExecutionContext, Config, MaterializeResult, asset, materialize
from pydantic import BaseModel

from resources import BudgetExceededError, CallLedger, ModelResource, SpendCap

CAP = "daily-usd"
PRICE_PER_MTOK = 1000.0  # $0.001 a token, so that a few dozen small calls reach a cap of cents
MAX_TOKENS = 8
LEDGERS: list[CallLedger] = []  # the run's ledger and refusals, for out.json
REFUSALS: list[str] = []


class Echo(BaseModel):
    text: str


class CappedCalls(Config):
    requests: int = 30


@asset
def capped_calls(context: AssetExecutionContext, config: CappedCalls, model: ModelResource) -> MaterializeResult:
    """Every request asked at the gateway's concurrency; each refusal is kept, the first fails the run."""
    refusals: list[str] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        try:
            llm.structured(
                [{"role": "user", "content": f"item {index} of the capped run"}], Echo, max_tokens=MAX_TOKENS
            )
        except BudgetExceededError as refused:
            with lock:
                refusals.append(str(refused))
            raise

    with model.session(context) as llm:
        LEDGERS.append(llm.ledger)
        with ThreadPoolExecutor(max_workers=model.max_concurrency) as pool:
            futures = [pool.submit(one, index) for index in range(config.requests)]
        REFUSALS.extend(refusals)
        for future in futures:
            future.result()
    return MaterializeResult(metadata={"requests": config.requests})


def capped_model(base_url: str, state_path: str, cap_usd: float) -> ModelResource:
    return ModelResource(
        base_url=base_url,
        fast_model="fake-fast",
        max_retries=0,
        max_concurrency=4,
        timeout_seconds=30,
        input_price_per_mtok=PRICE_PER_MTOK,
        output_price_per_mtok=PRICE_PER_MTOK,
        state_path=state_path,
        spend_caps=[SpendCap(name=CAP, period="day", usd=cap_usd)],
    )


def main() -> None:
    base_url, state_path, cap_usd, requests, out = sys.argv[1:6]
    print("ready", flush=True)
    sys.stdin.readline()
    result = materialize(
        [capped_calls],
        resources={"model": capped_model(base_url, state_path, float(cap_usd))},
        run_config={"ops": {"capped_calls": {"config": {"requests": int(requests)}}}},
        raise_on_error=False,
    )
    failures = [str(e.step_failure_data.error) for e in result.get_step_failure_events()]
    summary = LEDGERS[0].summary() if LEDGERS else None
    Path(out).write_text(
        json.dumps(
            {
                "run_id": result.run_id,
                "success": result.success,
                "failures": failures,
                "refusals": REFUSALS,
                "calls": summary.calls if summary else 0,
                "tokens": summary.prompt_tokens + summary.completion_tokens if summary else 0,
                "cost_usd": summary.cost_usd if summary else 0.0,
            }
        )
    )


if __name__ == "__main__":
    main()
