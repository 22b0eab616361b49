"""Settings: every one documented in .env.example, and a malformed one named in the error."""

import re
from pathlib import Path

import pytest

from ai_pipelines.settings import ENV_PREFIX, Settings, SettingsError, load_settings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parent.parent


def test_env_example_lists_every_setting():
    documented = set(re.findall(rf"^#?\s*{ENV_PREFIX}([A-Z_]+)=", (ROOT / ".env.example").read_text(), flags=re.M))
    assert {name.upper() for name in Settings.model_fields} <= documented


def test_malformed_setting_names_the_variable(monkeypatch):
    monkeypatch.setenv("AI_PIPELINES_MAX_UNSUPPORTED_SHARE", "lots")
    with pytest.raises(SettingsError, match="AI_PIPELINES_MAX_UNSUPPORTED_SHARE: .*number"):
        load_settings()


def test_a_setting_read_under_two_names_is_named_once(monkeypatch):
    monkeypatch.setenv("AI_PIPELINES_ROUTE_MIN_CONFIDENCE", "2")
    with pytest.raises(
        SettingsError, match=r"Invalid setting: AI_PIPELINES_MIN_ROUTE_CONFIDENCE: .*less than or equal to 1"
    ):
        load_settings()


def test_malformed_mcp_servers_fail_when_the_settings_load(monkeypatch):
    monkeypatch.setenv("AI_PIPELINES_AGENT_MCP_SERVERS", '[{"command": ["desk"]}]')  # no name
    with pytest.raises(SettingsError, match="AI_PIPELINES_AGENT_MCP_SERVERS: .*not a JSON list of MCP servers"):
        load_settings()


def test_fallbacks_and_topics_parse_from_the_environment(monkeypatch):
    monkeypatch.setenv("AI_PIPELINES_TOPICS", "Acme, Globex")
    monkeypatch.setenv("AI_PIPELINES_LLM_FALLBACKS", '[{"name": "backup", "base_url": "http://127.0.0.1:9/v1"}]')
    settings = load_settings()
    assert settings.topics == ["Acme", "Globex"] and settings.llm_fallbacks[0]["name"] == "backup"
