"""The fake server's scripts for the support-triage prompts: deterministic, derived from the prompt.

They behave like a competent small model would: screening flags instruction cues and
insults, routing reads keywords (and is unsure when a ticket mixes kinds), the reply
agent looks up the orders a ticket names and quotes what compute_refund allows, and
answers cite the help-centre article at the top of their context. Tests replace one
script to make the model misbehave (a leak, an over-limit promise, a tool loop).
"""

from __future__ import annotations

import json
import re
from typing import Any

_BLOCK = r"^<{tag}>\n(.*?)\n</{tag}>$"
ORDER = re.compile(r"\bO\d{4}\b")
INJECTION_CUES = re.compile(
    r"ignore (?:your|all|previous|the) (?:rules|instructions)|\bsystem\s*:|admin mode|new instructions|reveal|"
    r"include (?:the )?(?:order|details) of",
    re.IGNORECASE,
)
ABUSE_CUES = re.compile(r"\b(?:idiots?|morons?|incompetent|useless|pathetic|clowns?|regret)\b", re.IGNORECASE)
INTENT_CUES = {
    "billing": re.compile(r"\b(?:refund|charged?|invoice|vat|billing|payment|paid|price)\b", re.IGNORECASE),
    "bug": re.compile(r"\b(?:bug|crash\w*|error|broken|not working|stall\w*|fails?|sync)\b", re.IGNORECASE),
    "account": re.compile(r"\b(?:password|two-factor|2fa|log ?in|delete my account|e-?mail address)\b", re.IGNORECASE),
    "how_to": re.compile(r"\b(?:how (?:do|can) i|how to|export|offline|shortcut)\b", re.IGNORECASE),
}


def block(messages: list[dict[str, Any]], tag: str, index: int = 0) -> str:
    match = re.search(_BLOCK.format(tag=tag), str(messages[index].get("content") or ""), flags=re.M | re.S)
    return match.group(1) if match else ""


def screen_ticket(messages: list[dict[str, Any]]) -> dict[str, Any]:
    text = block(messages, "ticket")
    injection, abuse = INJECTION_CUES.search(text), ABUSE_CUES.search(text)
    reasons = [f"instruction cue {injection.group()!r}"] if injection else []
    reasons += [f"insult {abuse.group()!r}"] if abuse else []
    return {"injection": bool(injection), "abusive": bool(abuse), "reason": "; ".join(reasons)}


def route_ticket(messages: list[dict[str, Any]]) -> dict[str, Any]:
    text = block(messages, "ticket")
    hits = {intent: len(cue.findall(text)) for intent, cue in INTENT_CUES.items()}
    found = [intent for intent, count in hits.items() if count]
    if len(found) >= 2 and text.count("?") >= 2:
        return {
            "intent": "multi_part",
            "difficulty": "hard",
            "confidence": 0.85,
            "reason": f"asks about {', '.join(found)}",
        }
    if not found:
        return {"intent": "how_to", "difficulty": "easy", "confidence": 0.4, "reason": "no clear cue"}
    best = max(found, key=lambda intent: hits[intent])
    sure = 0.9 if len(found) == 1 else 0.75
    return {"intent": best, "difficulty": "easy", "confidence": sure, "reason": f"mentions {best}"}


def _context_lines(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return re.findall(r"^\[([a-z0-9-]+)\] [^:]*: (.+)$", block(messages, "context"), flags=re.M)


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]


def write_reply(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Answers from the top help-centre excerpt; a revision adds the citation it was asked for;
    a merge joins the worker answers."""
    prompt = str(messages[0]["content"])
    lines = _context_lines(messages)
    if "Reviewer's feedback" in prompt:
        reply = block(messages, "reply")
        slug = lines[0][0] if lines else "contact-and-support-hours"
        if f"(help centre: {slug})" not in reply:
            reply = f"{reply} (help centre: {slug})"
        return {"reply": reply, "cited_articles": [slug]}
    answers = block(messages, "answers")
    if answers:
        parts = re.findall(r"^Answer: (.+)$", answers, flags=re.M)
        slugs = re.findall(r"\(help centre: ([a-z0-9-]+)\)", answers)
        return {
            "reply": "Hello,\n\n" + "\n\n".join(parts) + "\n\nBest regards,\nLumen Notes support",
            "cited_articles": slugs,
        }
    if not lines:
        return {
            "reply": "Hello, thank you for writing. A colleague will follow up shortly. Best regards, Lumen Notes support",
            "cited_articles": [],
        }
    slug, excerpt = lines[0]
    return {
        "reply": f"Hello, thank you for contacting Lumen Notes. {_first_sentence(excerpt)} (help centre: {slug}) "
        "Best regards, Lumen Notes support",
        "cited_articles": [slug],
    }


def plan_ticket(messages: list[dict[str, Any]]) -> dict[str, Any]:
    text = block(messages, "ticket")
    questions = [q.strip() for q in re.findall(r"[^.!?\n]+\?", text)]
    return {"questions": questions[:8] or [text[:200]]}


def critique_reply(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"answers_question": True, "cites_help_centre": True, "follows_policy": True, "polite": True, "feedback": ""}


def summarize_history(messages: list[dict[str, Any]]) -> dict[str, Any]:
    turns = re.findall(r"^\[[\d-]+\] (\w+): (.{0,80})", block(messages, "history"), flags=re.M)
    return {"summary": "Earlier: " + " | ".join(f"{role}: {text}" for role, text in turns)[:700]}


def _tool_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    results = []
    for message in messages:
        if message.get("role") == "tool":
            try:
                results.append(json.loads(message["content"]))
            except (json.JSONDecodeError, TypeError):
                results.append({"error": message.get("content")})
    return results


def reply_agent(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """First turn: look up the orders the ticket names (and quote a refund), or search the help
    centre. Next turn: answer from what the tools returned."""
    ticket = block(messages, "ticket")
    results = _tool_results(messages)
    if not results:
        orders = sorted(set(ORDER.findall(ticket)))[:2]
        if orders:
            calls = [{"name": "lookup_order", "arguments": {"order_id": o}} for o in orders]
            calls += [{"name": "compute_refund", "arguments": {"order_id": o}} for o in orders]
            return {"tool_calls": calls}
        subject = re.search(r"^Subject: (.+)$", ticket, flags=re.M)
        return {
            "tool_calls": [
                {"name": "search_help_centre", "arguments": {"query": subject.group(1) if subject else ticket[:80]}}
            ]
        }
    sentences = ["Hello, thank you for contacting Lumen Notes."]
    for result in results:
        if "eligible" in result:
            if result["eligible"] and not result.get("requires_approval"):
                sentences.append(
                    f"Order {result['order_id']} qualifies: we will refund {result['amount_eur']:.2f} EUR "
                    "to your original payment method within 5-10 business days."
                )
            elif result["eligible"]:
                sentences.append(
                    f"A supervisor will review the refund for order {result['order_id']} and reply to you."
                )
            else:
                sentences.append(f"Order {result['order_id']} is not eligible for a refund: {result.get('reason', '')}")
        elif "hits" in result and result["hits"]:
            hit = result["hits"][0]
            sentences.append(f"{_first_sentence(hit['excerpt'])} (help centre: {hit['slug']})")
    slugs = [slug for slug, _ in _context_lines(messages)]
    if not any("(help centre:" in s for s in sentences):
        sentences.append(f"(help centre: {'refund-policy' if 'refund-policy' in slugs or not slugs else slugs[0]})")
    sentences.append("Best regards, Lumen Notes support")
    return {"content": " ".join(sentences), "tool_calls": []}


TRIAGE_SCRIPTS = {
    "TicketScreen": screen_ticket,
    "TicketIntent": route_ticket,
    "TicketReply": write_reply,
    "TicketPlan": plan_ticket,
    "RubricCritique": critique_reply,
    "HistorySummary": summarize_history,
    "tools": reply_agent,
}
