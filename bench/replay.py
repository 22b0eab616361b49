"""The code a user would otherwise write: the same model calls without an orchestrator.

Both replay the exact requests the digest graph sent (recorded by the test server), to
the same server at the same latency. The sequential script sends them one after the
other; the asyncio script sends each stage's requests at once under a semaphore of
the same concurrency, stage after stage (a stage's inputs come from the one before),
which is how a hand-written pipeline would have to order them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from openai import AsyncOpenAI, OpenAI

Call = dict[str, Any]


def _body(call: Call) -> dict[str, Any]:
    body = {"model": call["model"], "messages": call["messages"]}
    if call.get("response_format"):
        body["response_format"] = call["response_format"]
    if call.get("max_tokens"):
        body["max_tokens"] = call["max_tokens"]
    return body


def stages(calls: list[Call]) -> list[list[Call]]:
    """The calls grouped by schema, in the order each schema was first asked for."""
    grouped: dict[str, list[Call]] = {}
    for call in calls:
        grouped.setdefault(call["schema"], []).append(call)
    return list(grouped.values())


def sequential(base_url: str, calls: list[Call]) -> float:
    """Seconds for one call after another with the plain openai client."""
    client = OpenAI(base_url=base_url, api_key="not-needed", max_retries=0)
    started = time.perf_counter()
    for call in calls:
        client.chat.completions.create(**_body(call))
    return time.perf_counter() - started


def concurrent(base_url: str, calls: list[Call], concurrency: int) -> float:
    """Seconds for the stages in order, each stage's calls at `concurrency` with asyncio."""

    async def run() -> float:
        client = AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0)
        limit = asyncio.Semaphore(concurrency)

        async def one(call: Call) -> None:
            async with limit:
                await client.chat.completions.create(**_body(call))

        started = time.perf_counter()
        for stage in stages(calls):
            await asyncio.gather(*(one(c) for c in stage))
        elapsed = time.perf_counter() - started
        await client.close()
        return elapsed

    return asyncio.run(run())
