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
    "billing": re.compile(
        r"\b(?:refund|charged?|invoice|vat|billing|payment|paid|price|fee|statement)\b", re.IGNORECASE
    ),
    "bug": re.compile(
        r"\b(?:bug|crash\w*|error|broken|not working|never worked|to work|stall\w*|fails?|sync)\b", re.IGNORECASE
    ),
    "account": re.compile(
        r"\b(?:password|two-factor|2fa|log ?in|delete my account|e-?mail address|my address|my details)\b",
        re.IGNORECASE,
    ),
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


_RUBRIC_ECHO = re.compile(r"answers_question|cites_help_centre|follows_policy|<slug>|\brubric\b", re.IGNORECASE)
_CITED = re.compile(r"\(help[ -]?cent(?:re|er):\s*([a-z0-9-]+)\)", re.IGNORECASE)
_AMOUNT = re.compile(r"(\d+(?:\.\d+)?)\s*(?:EUR|euros?)\b", re.IGNORECASE)
_CUSTOMER = re.compile(r"\bC\d{3}\b")
_COURTESY = re.compile(r"\b(?:hello|hi|dear|thank(?:s| you)|sorry|regards)\b", re.IGNORECASE)
_RUDE = re.compile(r"\b(?:clearly|obviously|yourself|stupid|your fault|as i said)\b", re.IGNORECASE)
_FORMULA = frozenset("hello thank thanks writing contacting contact message regards lumen notes support sorry".split())


def critique_reply(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """A capable reviewer, by rules over the reply, its ticket and its context: the reply must take
    up what the ticket and its context are about (beyond greetings), cite an article of its
    context, promise no amount over the limit or over what was paid, name no order or customer
    the ticket and context do not, and be courteous."""
    prompt = str(messages[0]["content"])
    reply, ticket, context = block(messages, "reply"), block(messages, "ticket"), block(messages, "context")
    source = f"{ticket}\n{context}"
    limit = re.search(r"never more than (\d+(?:\.\d+)?) euros", prompt)
    paid = [float(a) for a in _AMOUNT.findall(context)]
    said = set(re.findall(r"[a-z]{5,}", _CITED.sub(" ", reply).lower())) - _FORMULA
    feedback = []
    echo = _RUBRIC_ECHO.search(reply)
    answers = not echo and len(said & set(re.findall(r"[a-z]{5,}", source.lower()))) >= 2
    if not answers:
        feedback.append("It repeats the review instructions." if echo else "It does not take up what was asked.")
    cites = any(f"[{slug.lower()}]" in context for slug in _CITED.findall(reply))
    if not cites:
        feedback.append("Cite an article of the context.")
    amounts = [float(a) for a in _AMOUNT.findall(reply)]
    over = [a for a in amounts if (limit and a > float(limit.group(1))) or a > max(paid, default=0.0)]
    strangers = (set(ORDER.findall(reply)) - set(ORDER.findall(source))) | (
        set(_CUSTOMER.findall(reply)) - set(_CUSTOMER.findall(source))
    )
    policy = not over and not strangers
    if not policy:
        feedback.append(
            f"It promises or names what policy forbids ({', '.join(map(str, over)) or ', '.join(sorted(strangers))})."
        )
    polite = bool(_COURTESY.search(reply)) and not _RUDE.search(reply)
    if not polite:
        feedback.append("Be courteous.")
    return {
        "answers_question": answers,
        "cites_help_centre": cites,
        "follows_policy": policy,
        "polite": polite,
        "feedback": " ".join(feedback)[:240],
    }


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
