"""Smoke test against the real embedded model: llama.cpp on 127.0.0.1, schema-valid output."""

from typing import Literal

import pytest
from pydantic import BaseModel

from resources import ModelResource
from resources.gateway.local_model import EMBEDDED_SERVER

pytestmark = pytest.mark.integration  # the embedded llama.cpp model


class Sentiment(BaseModel):
    company: str
    sentiment: Literal["positive", "negative", "neutral"]


def test_embedded_model_returns_schema_valid_output():
    session = ModelResource().open_session()
    answer = session.structured(
        [{"role": "user", "content": "Acme Corp's profits fell 20 percent. Give the company and the sentiment."}],
        Sentiment,
        max_tokens=60,
    )
    assert isinstance(answer, Sentiment)
    assert EMBEDDED_SERVER.url.startswith("http://127.0.0.1:")
    assert EMBEDDED_SERVER.running
    summary = session.ledger.summary()
    assert summary.calls >= 1 and summary.completion_tokens > 0
