"""The run's model budget: what has been spent, and the refusal of a call once it is spent.

A run's spend is read from the trace table when there is one: each step process of a
multiprocess or celery run has its own resource instance, but all of them write every call
there with the run id, so the run's total is the same wherever it is read. Without a trace
table, or for calls outside a run, a budget is this process's own.
"""

from __future__ import annotations

import threading
from typing import Callable

from resources.gateway.config import GatewayConfig
from resources.gateway.errors import BudgetExceededError
from resources.gateway.ledger import CallRecord
from resources.gateway.traces import TraceStore


class RunBudget:
    def __init__(self, config: GatewayConfig, traces: Callable[[], TraceStore | None]) -> None:
        self._config = config
        self._traces = traces
        self._lock = threading.Lock()
        self._spent: dict[str, float] = {"usd": 0.0, "tokens": 0}

    def spent(self, run_id: str = "") -> dict[str, float]:
        """What has been spent ("usd", "tokens"): the run's total over every process and host that
        records to the trace table, with a run id and a trace table; otherwise this process's."""
        store = self._traces() if run_id else None
        if store is not None:
            shared = store.run_spend(run_id)
            return {"usd": shared.usd, "tokens": shared.tokens}
        with self._lock:
            return dict(self._spent)

    def charge(self, record: CallRecord) -> None:
        with self._lock:
            self._spent["usd"] += record.cost_usd
            self._spent["tokens"] += record.prompt_tokens + record.completion_tokens

    def check(self, run_id: str = "") -> None:
        """Refuse a call once the run has spent its budget (see `spent`). Nothing is read when no
        budget is set."""
        config = self._config
        if not (config.budget_usd or config.budget_tokens):
            return
        spent = self.spent(run_id)
        over_usd = config.budget_usd and spent["usd"] >= config.budget_usd
        over_tokens = config.budget_tokens and spent["tokens"] >= config.budget_tokens
        if over_usd or over_tokens:
            whose = (
                f"run {run_id} (every step recording to the trace store)"
                if run_id and config.trace_path
                else "this process"
            )
            raise BudgetExceededError(
                f"model budget exhausted: {whose} spent {spent['tokens']:.0f} tokens and "
                f"${spent['usd']:.4f} (budget: {config.budget_tokens or 'unlimited'} tokens, "
                f"${config.budget_usd or 'unlimited'}); no further model calls in this run"
            )
