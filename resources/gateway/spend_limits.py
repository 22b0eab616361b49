"""Spend caps and tokens-per-minute limits, shared by every run, process and sensor.

A run's budget (see `budget`) stops one run; a cap stops all of them: what every run,
celery worker and sensor spent today or this month, per tier or endpoint, in USD and
tokens, and what each endpoint was sent in the last minute. So the figures live in the
gateway's state store (`state_path`: a SQLite file, or Postgres in production), one row per
call, and a call reserves its estimate there before it is sent: the check and the
reservation happen in one transaction that every process runs alone, so two runs cannot
both take the last dollar. The answer's actual tokens and cost then replace the estimate
(`settle`); a call that got no answer gives its reservation back (`release`).

The estimate is the prompt at about three characters a token plus `max_tokens`, which no
answer exceeds, so what is settled stays within a cap that every call was checked against.
A call that would break a cap is refused before it is sent, with the cap, its period and
what was spent; `SpendCapExceededError` is a `BudgetExceededError`, so the step fails as
when its run's budget is spent. A call that would take its endpoint over its tokens per
minute waits (outside the lock) until calls older than a minute make room.

With no caps and no tokens-per-minute limit, or no state store, nothing is read or written.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, NamedTuple

from pydantic import BaseModel, computed_field

from resources.gateway.config import Endpoint, GatewayConfig, SpendCap
from resources.gateway.errors import SpendCapExceededError
from resources.gateway.ledger import CallRecord
from resources.secrets import reveal
from resources.storage.state_store import StateStore, Transaction

LOG = logging.getLogger("ai_pipelines.model")

CHARS_PER_TOKEN = 3  # fewer than most tokenizers' ~4 for English: the estimate errs high
WINDOW_SECONDS = 60.0
# A reservation that was never settled nor given back (its process was killed mid-call)
# stops counting after this long, far beyond any call's deadline and retries.
RESERVATION_TTL_SECONDS = 3600.0
# The Postgres advisory lock that serializes reservations (any constant no other lock uses).
SPEND_LOCK = 0x5E4D_CA95
# Entries of live calls: a provider batch's spend is charged under the run `batch:<id>`.
LIVE = "run_id not like 'batch:%'"

SCHEMA = """
create table if not exists spend_entries (
    id text primary key,
    created_at double precision not null,
    day text not null,
    month text not null,
    tier text not null,
    endpoint text not null,
    run_id text not null,
    usd double precision not null,
    tokens integer not null,
    settled integer not null default 0
);
create index if not exists spend_entries_by_day on spend_entries (day);
create index if not exists spend_entries_by_month on spend_entries (month);
create index if not exists spend_entries_by_endpoint on spend_entries (endpoint, created_at);
"""


class Reservation(NamedTuple):
    """A call's estimate, held in the store from before it is sent until it is settled or released."""

    id: str
    tokens: int
    usd: float


class CapStanding(BaseModel):
    """Where a cap stands in its current period: spent includes calls in flight (their estimates)."""

    name: str
    period: str
    period_start: str  # the UTC day (2026-12-05) or month (2026-12)
    tier: str
    endpoint: str
    spent_usd: float
    spent_tokens: int
    limit_usd: float  # 0 = no USD limit
    limit_tokens: int  # 0 = no token limit

    @computed_field
    @property
    def scope(self) -> str:
        return scope_of(self.tier, self.endpoint)

    @computed_field
    @property
    def remaining_usd(self) -> float | None:
        return round(max(0.0, self.limit_usd - self.spent_usd), 6) if self.limit_usd else None

    @computed_field
    @property
    def remaining_tokens(self) -> int | None:
        return max(0, self.limit_tokens - self.spent_tokens) if self.limit_tokens else None


class EndpointMinute(BaseModel):
    """The tokens an endpoint was sent in the last minute, by every process, and its limit."""

    endpoint: str
    tokens: int
    limit: int


def estimate_tokens(messages: list[dict[str, Any]], max_tokens: int) -> tuple[int, int]:
    """A call's prompt and completion tokens before it is sent: the prompt erring high, the completion
    at the most it may be."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return math.ceil(chars / CHARS_PER_TOKEN), max(0, max_tokens)


def scope_of(tier: str, endpoint: str) -> str:
    return f"{f'tier {tier}' if tier else 'every tier'}, {f'endpoint {endpoint}' if endpoint else 'every endpoint'}"


def period_start(cap: SpendCap, moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d" if cap.period == "day" else "%Y-%m")


def refusal(cap: SpendCap, start: str, spent_usd: float, spent_tokens: int, usd: float, tokens: int) -> str | None:
    """Why this call would break `cap`, or None when it fits."""
    where = f"spend cap {cap.name!r} ({cap.period} {start} UTC, {scope_of(cap.tier, cap.endpoint)})"
    if cap.usd and spent_usd + usd > cap.usd:
        spent = f"spent ${spent_usd:.4f} of ${cap.usd:.4f} (+${usd:.4f} for this call)"
    elif cap.tokens and spent_tokens + tokens > cap.tokens:
        spent = f"spent {spent_tokens} of {cap.tokens} tokens (+{tokens} for this call)"
    else:
        return None
    return f"{where}: {spent}; call refused before it was sent"


class SpendLimits:
    """The caps and per-minute limits of one gateway, over its state store (opened on first use)."""

    def __init__(
        self,
        config: GatewayConfig,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._config = config
        self._caps = list(config.spend_caps)
        self._per_minute = {e.name: e.tokens_per_minute for e in config.chain() if e.tokens_per_minute}
        self.active = bool(config.state_path) and bool(self._caps or self._per_minute)
        if not config.state_path and (self._caps or self._per_minute):
            LOG.warning("Spend caps and tokens-per-minute limits are not enforced: the gateway has no state_path")
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._store: StateStore | None = None
        self.waits = 0  # calls that waited for room under a tokens-per-minute limit
        self.waited_seconds = 0.0

    def store(self) -> StateStore:
        with self._lock:
            if self._store is None:
                self._store = StateStore(reveal(self._config.state_path), SCHEMA)
                month = datetime.fromtimestamp(self._clock(), timezone.utc).strftime("%Y-%m")
                # Rows no period still counts: earlier months, reservations nobody will settle.
                self._store.execute(
                    "delete from spend_entries where month < ? or (settled = 0 and created_at < ?)",
                    (month, self._clock() - RESERVATION_TTL_SECONDS),
                )
            return self._store

    def _caps_for(self, endpoint: str, tier: str) -> list[SpendCap]:
        return [c for c in self._caps if (not c.tier or c.tier == tier) and (not c.endpoint or c.endpoint == endpoint)]

    # --- around each call -------------------------------------------------------------------------

    def reserve(
        self, endpoint: Endpoint, tier: str, messages: list[dict[str, Any]], max_tokens: int, run_id: str = ""
    ) -> Reservation | None:
        """Hold the call's estimate against every cap that counts it, waiting first while its
        endpoint's last minute has no room. Raises `SpendCapExceededError` when a cap would
        break (nothing is held then); None when no limit applies."""
        if not self.active:
            return None
        caps = self._caps_for(endpoint.name, tier)
        per_minute = self._per_minute.get(endpoint.name, 0)
        if not (caps or per_minute):
            return None
        prompt, completion = estimate_tokens(messages, max_tokens)
        tokens, usd = prompt + completion, self._config.cost(tier, prompt, completion)
        if per_minute and tokens > per_minute:
            raise SpendCapExceededError(
                f"tokens per minute of endpoint {endpoint.name!r}: this call may use {tokens} tokens (prompt and "
                f"max_tokens), more than its {per_minute} a minute, so it could never be sent; call refused"
            )
        store, started, waited = self.store(), self._clock(), False
        while True:
            now = self._clock()
            moment = datetime.fromtimestamp(now, timezone.utc)
            with store.transaction(SPEND_LOCK) as spend:
                for cap in caps:
                    start = period_start(cap, moment)
                    spent_usd, spent_tokens = self._spent(spend, cap, start, now)
                    reason = refusal(cap, start, spent_usd, spent_tokens, usd, tokens)
                    if reason is not None:
                        raise SpendCapExceededError(reason)
                wait = self._wait_for_room(spend, endpoint.name, per_minute, tokens, now) if per_minute else 0.0
                if wait <= 0:
                    reservation = Reservation(uuid.uuid4().hex, tokens, usd)
                    spend.execute(
                        "insert into spend_entries (id, created_at, day, month, tier, endpoint, run_id, usd, tokens, "
                        "settled) values (?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                        (
                            reservation.id,
                            now,
                            moment.strftime("%Y-%m-%d"),
                            moment.strftime("%Y-%m"),
                            tier,
                            endpoint.name,
                            run_id,
                            usd,
                            tokens,
                        ),
                    )
                    break
            if not waited:
                waited = True
                self._count_wait()
                LOG.info(
                    f"Waiting for room under endpoint {endpoint.name!r}'s {per_minute} tokens per minute "
                    f"(a call of up to {tokens} tokens)"
                )
            self._sleep(min(wait, WINDOW_SECONDS))
        if waited:
            with self._lock:
                self.waited_seconds += self._clock() - started
        return reservation

    def settle(self, reservation: Reservation | None, record: CallRecord) -> None:
        """The answered call's actual tokens and cost in place of its estimate (which stays when
        the answer carried no usage: the call was paid for all the same)."""
        if reservation is None:
            return
        tokens = record.prompt_tokens + record.completion_tokens
        usd = record.cost_usd if tokens else reservation.usd
        self.store().execute(
            "update spend_entries set usd = ?, tokens = ?, settled = 1 where id = ?",
            (usd, tokens or reservation.tokens, reservation.id),
        )

    def release(self, reservation: Reservation | None) -> None:
        """Give back the reservation of a call that got no answer."""
        if reservation is not None:
            self.store().execute("delete from spend_entries where id = ?", (reservation.id,))

    # --- provider batches -------------------------------------------------------------------------

    def admit(self, endpoint: Endpoint, tier: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Refuse a provider batch whose expected cost would break a cap before it is submitted.

        Nothing is held: a batch answers hours later, far beyond a reservation's life, so its
        cost is charged when its answers arrive (`charge`). Runs that spend meanwhile can take
        the room it expected, so a cap can end over by what batches in flight cost."""
        caps = self._caps_for(endpoint.name, tier) if self.active else []
        if not caps:
            return
        tokens, usd = prompt_tokens + completion_tokens, self._config.cost(tier, prompt_tokens, completion_tokens)
        usd *= endpoint.batch_price_ratio
        now = self._clock()
        moment = datetime.fromtimestamp(now, timezone.utc)
        with self.store().transaction(SPEND_LOCK) as spend:
            for cap in caps:
                start = period_start(cap, moment)
                reason = refusal(cap, start, *self._spent(spend, cap, start, now), usd, tokens)
                if reason is not None:
                    raise SpendCapExceededError(reason.replace("call refused", "batch refused"))

    def charge(self, endpoint: str, tier: str, tokens: int, usd: float, run_id: str) -> None:
        """Spend already made (a provider batch's answers), counted by every cap from now on. It
        stays out of the endpoint's tokens per minute: batches have the provider's own limits."""
        if not self.active:
            return
        now = self._clock()
        moment = datetime.fromtimestamp(now, timezone.utc)
        self.store().execute(
            "insert into spend_entries (id, created_at, day, month, tier, endpoint, run_id, usd, tokens, settled) "
            "values (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
            (
                uuid.uuid4().hex,
                now,
                moment.strftime("%Y-%m-%d"),
                moment.strftime("%Y-%m"),
                tier,
                endpoint,
                run_id,
                usd,
                tokens,
            ),
        )

    def _count_wait(self) -> None:
        with self._lock:
            self.waits += 1

    @staticmethod
    def _counted(now: float) -> tuple[str, float]:
        """The condition of the rows that count: settled, or reservations still held."""
        return "(settled = 1 or created_at > ?)", now - RESERVATION_TTL_SECONDS

    def _spent(self, spend: StateStore | Transaction, cap: SpendCap, start: str, now: float) -> tuple[float, int]:
        counted, since = self._counted(now)
        sql = f"select coalesce(sum(usd), 0), coalesce(sum(tokens), 0) from spend_entries where {cap.period} = ? and {counted}"
        params: list[Any] = [start, since]
        if cap.tier:
            sql, params = sql + " and tier = ?", [*params, cap.tier]
        if cap.endpoint:
            sql, params = sql + " and endpoint = ?", [*params, cap.endpoint]
        usd, tokens = spend.fetchall(sql, params)[0]
        return float(usd), int(tokens)

    def _wait_for_room(self, spend: Transaction, endpoint: str, limit: int, tokens: int, now: float) -> float:
        """Seconds until the endpoint's last minute has room for `tokens` (0 when it has now)."""
        counted, since = self._counted(now)
        rows = spend.fetchall(
            f"select created_at, tokens from spend_entries where endpoint = ? and created_at > ? and {counted} "
            f"and {LIVE} order by created_at",
            (endpoint, now - WINDOW_SECONDS, since),
        )
        used = sum(int(t) for _, t in rows)
        if used + tokens <= limit:
            return 0.0
        for created_at, entry_tokens in rows:  # the oldest leave the window first
            used -= int(entry_tokens)
            if used + tokens <= limit:
                return max(0.01, float(created_at) + WINDOW_SECONDS - now)
        return WINDOW_SECONDS  # not reached: a call over the whole limit is refused before

    # --- what they stand at -----------------------------------------------------------------------

    def standing(self) -> list[CapStanding]:
        """Every cap's spend in its current period, calls in flight included; none without a store."""
        if not (self._config.state_path and self._caps):
            return []
        store, now = self.store(), self._clock()
        moment = datetime.fromtimestamp(now, timezone.utc)
        standings = []
        for cap in self._caps:
            start = period_start(cap, moment)
            usd, tokens = self._spent(store, cap, start, now)
            standings.append(
                CapStanding(
                    name=cap.name,
                    period=cap.period,
                    period_start=start,
                    tier=cap.tier,
                    endpoint=cap.endpoint,
                    spent_usd=round(usd, 6),
                    spent_tokens=tokens,
                    limit_usd=cap.usd,
                    limit_tokens=cap.tokens,
                )
            )
        return standings

    def last_minute(self) -> list[EndpointMinute]:
        """Each endpoint with a tokens-per-minute limit: what every process sent it in the last minute."""
        if not (self._config.state_path and self._per_minute):
            return []
        store, now = self.store(), self._clock()
        counted, since = self._counted(now)
        minutes = []
        for endpoint, limit in self._per_minute.items():
            row = store.fetchone(
                f"select coalesce(sum(tokens), 0) from spend_entries where endpoint = ? and created_at > ? and {counted} "
                f"and {LIVE}",
                (endpoint, now - WINDOW_SECONDS, since),
            )
            minutes.append(EndpointMinute(endpoint=endpoint, tokens=int(row[0]) if row else 0, limit=limit))
        return minutes
