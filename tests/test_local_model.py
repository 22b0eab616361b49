"""Smoke test against the real embedded model: llama.cpp on 127.0.0.1, schema-valid output."""

from typing import Literal

import pytest
from pydantic import BaseModel

from resources import CallLedger, ModelResource
from resources.gateway.local_model import EMBEDDED_SERVER

pytestmark = pytest.mark.integration  # the embedded llama.cpp model


class Sentiment(BaseModel):
    company: str
    sentiment: Literal["positive", "negative", "neutral"]


def test_embedded_model_returns_schema_valid_output():
    model = ModelResource()
    ledger = CallLedger()
    answer = model.structured(
        [{"role": "user", "content": "Acme Corp's profits fell 20 percent. Give the company and the sentiment."}],
        Sentiment,
        max_tokens=60,
        ledger=ledger,
    )
    assert isinstance(answer, Sentiment)
    assert model.endpoint().startswith("http://127.0.0.1:")
    assert EMBEDDED_SERVER.running
    summary = ledger.summary()
    assert summary.calls >= 1 and summary.completion_tokens > 0
