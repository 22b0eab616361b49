"""A request is one value, and the response cache's key is made from it: the key must stay what
it was, or every unchanged re-run would pay again for the calls it has cached."""

import pytest
from pydantic import BaseModel

from resources.gateway.config import Endpoint, GatewayConfig
from resources.gateway.request import ModelRequest, response_format_for
from resources.gateway.tool_turns import AgentTurn

pytestmark = pytest.mark.unit

CONFIG = GatewayConfig(
    base_url="http://127.0.0.1:9/v1",
    fast_model="fast-model",
    strong_model="strong-model",
    fallbacks=[Endpoint(name="backup", base_url="http://127.0.0.1:8/v1", fast_model="backup-fast")],
)
MESSAGES = [{"role": "user", "content": "Label this."}]
SEARCH = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}


class Label(BaseModel):
    label: str


def models(tier: str) -> list[str]:
    return [e.model_for(tier) for e in CONFIG.chain()]  # type: ignore[arg-type]


def test_the_cache_key_of_a_request_is_the_one_it_always_was():
    structured = ModelRequest(messages=MESSAGES, output=Label)
    sampled = ModelRequest(messages=MESSAGES, output=Label, tier="strong", temperature=0.7, sample=2)
    turn = ModelRequest(messages=MESSAGES, output=AgentTurn, tier="strong", max_tokens=512, tools=[SEARCH])
    assert structured.key(models("fast")) == "3afe3b7e2bbf4f84c6be8d1ae62cb163117f220538a77531ea5bc873f81373fe"
    assert sampled.key(models("strong")) == "6d70427109f34502625418977669fb29565b6b7f7d1457d120b552a38ca900b9"
    assert turn.key(models("strong")) == "b3c100b758b35d6ae4b91491eb2ea9ac10bf1ffe4b60ab87da1c7772dfb84482"


def test_what_is_sent_beside_the_messages_follows_from_the_request():
    structured = ModelRequest(messages=MESSAGES, output=Label, max_tokens=100, temperature=0.3)
    assert structured.parameters() == {
        "response_format": response_format_for(Label),
        "max_tokens": 100,
        "temperature": 0.3,
    }
    turn = ModelRequest(messages=MESSAGES, output=AgentTurn, tools=[SEARCH])
    assert turn.parameters() == {"tools": [SEARCH], "max_tokens": 256, "temperature": 0.0}
    assert structured.partition == "" and structured.sample == 0 and structured.input_chars == len("Label this.")
    assert models("fast") == ["fast-model", "backup-fast"] and models("strong") == ["strong-model", "backup-fast"]
