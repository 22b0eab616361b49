"""The support-triage prompts, and the one way a ticket's text reaches a model.

A ticket is written by whoever sends it, so it is data in every prompt: inside a
delimited <ticket> block whose delimiters are neutralized within the text (see
`resources.guardrails.prompt_injection.data_block`), below instructions that say so. Prompt files are
versioned by content; each asset's code version carries the versions of its prompts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from resources.guardrails.prompt_injection import data_block
from resources.prompts import Prompt, load_prompt

HERE = Path(__file__).parent
SCREEN = load_prompt(HERE, "screen_ticket")
AGENT = load_prompt(HERE, "reply_agent")
ANSWER = load_prompt(HERE, "answer_ticket")
PLAN = load_prompt(HERE, "plan_ticket")
ANSWER_PART = load_prompt(HERE, "answer_part")
MERGE = load_prompt(HERE, "merge_answers")
CRITIQUE = load_prompt(HERE, "critique_reply")
REVISE = load_prompt(HERE, "revise_reply")
SUMMARIZE_HISTORY = load_prompt(HERE, "summarize_history")

# Answer lengths, in tokens, per kind of request: a support reply is a few short paragraphs,
# and a small model that rambles to its limit costs the whole limit on every call. Each
# schema's strings carry a maxLength, which grammar-constrained servers (llama.cpp) enforce,
# so a rambling answer still closes its JSON within these budgets instead of being cut.
MAX_TOKENS = {
    "screen": 160,
    "history": 300,
    "agent_turn": 350,
    "reply": 500,
    "plan": 300,
    "part": 300,
    "merge": 600,
    "critique": 200,
}


def versions(*prompts: Prompt) -> str:
    """One short version for a set of prompts, for a code version."""
    return hashlib.sha256("".join(p.version for p in prompts).encode()).hexdigest()[:8]


def ticket_block(subject: str, body: str) -> str:
    return data_block("ticket", f"Subject: {subject}\n\n{body}")


def user(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]
