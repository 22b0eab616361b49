"""Cutting a prompt to fit a context window, for the steps that declare they would rather have
an answer to part of their input than none (`context_overflow="cut"`).

No tokenizer is at hand for every model an endpoint may serve, so the fit is estimated at
`CHARS_PER_TOKEN` characters a token, low for English (about 4), so that the cut prompt fits
with room to spare. The instruction comes first in the project's prompts and the data after it,
so the longest message keeps its beginning; its last characters are kept too, since a prompt
often closes its data block there and repeats what to answer. The cut is marked in the text, so
the model, and a person reading the trace, can see that the input was not whole.
"""

from __future__ import annotations

from resources.gateway.request import Messages

CHARS_PER_TOKEN = 3
MESSAGE_OVERHEAD_TOKENS = 8  # a role and the delimiters of each message, as chat templates add them
KEPT_TAIL_SHARE = 0.2  # of the longest message's kept characters, the part taken from its end
KEPT_TAIL_MAX = 400


def cut_marker(characters: int) -> str:
    return f"\n[... {characters} characters cut to fit the context window]\n"


def cut_to_fit(messages: Messages, window_tokens: int, max_tokens: int) -> Messages | None:
    """`messages` with the longest one's content shortened so that the prompt, and `max_tokens`
    of answer, fit `window_tokens` by the estimate. None when it cannot be cut to fit: the other
    messages alone are too long, or the prompt already fits by the estimate (so the window is
    not the one the endpoint holds it to, and cutting by it would ask the same again)."""
    budget = (window_tokens - max_tokens - MESSAGE_OVERHEAD_TOKENS * len(messages)) * CHARS_PER_TOKEN
    texts = [str(m.get("content") or "") for m in messages]
    if not texts:
        return None
    longest = max(range(len(texts)), key=lambda i: len(texts[i]))
    others = sum(len(t) for i, t in enumerate(texts) if i != longest)
    content = texts[longest]
    room = budget - others - len(cut_marker(len(content)))
    if room <= 0:
        return None
    if room >= len(content):
        return None
    tail = min(int(room * KEPT_TAIL_SHARE), KEPT_TAIL_MAX)
    head = room - tail
    shortened = content[:head] + cut_marker(len(content) - room) + (content[len(content) - tail :] if tail else "")
    return [{**m, "content": shortened} if i == longest else m for i, m in enumerate(messages)]
