"""Output guardrails: what no reply may do, whatever the model was told or tricked into.

Three rules, checked by code on the final text of every reply, each violation named
with what was found:
- other_customer_data: the reply names another customer (id, name, e-mail) or an
  order that is not the ticket's customer's;
- refund_over_limit: the reply promises a refund above the per-reply limit, or above
  what the policy allows for this customer's orders on the ticket's date;
- planted_instruction: the reply itself carries instructions to a model, says it is
  complying with an override ("admin mode", "as instructed"), or repeats the text that
  the input guardrails flagged in the ticket.
They hold for the model's text however it was produced, so a prompt injection that got
past screening still cannot get its payload out.
"""

from __future__ import annotations

import re
from typing import Literal, Sequence

from pydantic import BaseModel

from resources.guardrails.prompt_injection import screen
from resources.support.support_desk import SupportDeskError, SupportDeskResource

Rule = Literal["other_customer_data", "refund_over_limit", "planted_instruction"]
ORDER_ID = re.compile(r"\bO\d{3,}\b")
CUSTOMER_ID = re.compile(r"\bC\d{3,}\b")
_AMOUNT = re.compile(
    r"(?:€|\bEUR\s?|\beuros?\s)\s?(\d{1,3}(?:[ ,.]\d{3})*(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?)"
    r"|(\d{1,3}(?:[ ,.]\d{3})*(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?)\s?(?:€|EUR\b|euros?\b)",
    re.IGNORECASE,
)
_REFUND_WORDS = re.compile(
    r"\b(?:refund\w*|reimburs\w*|credited|(?:store|account)\s+credit|credit\s+note|money\s+back|pay\s+(?:you\s+)?back|compensat\w*)\b",
    re.IGNORECASE,
)
_COMPLIANCE = re.compile(
    r"\b(?:admin(?:istrator)?\s+mode|developer\s+mode|as\s+(?:you\s+)?(?:instructed|requested\s+in\s+the\s+system)|"
    r"ignoring\s+(?:my|the|all)\s+(?:rules|instructions|policy)|(?:rules|instructions|policy)\s+(?:are|have\s+been)\s+"
    r"(?:ignored|overridden|disabled|lifted)|approv\w*\s+(?:every|all)\s+refunds?|new\s+instructions)\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n")
REPEAT_WORDS = 8


class Violation(BaseModel):
    rule: Rule
    detail: str


def _amount(text: str) -> float:
    """ "5,000" and "5.000" are thousands; "380.00" and "49,50" have cents."""
    digits = text.replace(" ", "")
    if match := re.match(r"^(.*?)[.,](\d{1,2})$", digits):
        return float(re.sub(r"[.,]", "", match.group(1)) + "." + match.group(2))
    return float(re.sub(r"[.,]", "", digits))


def promised_refunds(reply: str) -> list[float]:
    """Amounts that sentences about refunds or credits mention."""
    amounts = []
    for sentence in _SENTENCE_END.split(reply):
        if _REFUND_WORDS.search(sentence):
            amounts += [_amount(a or b) for a, b in _AMOUNT.findall(sentence)]
    return amounts


def _word_runs(text: str, length: int) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + length]) for i in range(len(words) - length + 1)}


def output_violations(
    reply: str,
    *,
    customer_id: str,
    as_of: str,
    flagged_text: Sequence[str],
    support_desk: SupportDeskResource,
    refund_limit: float,
) -> list[Violation]:
    found: list[Violation] = []
    own_orders = {o.order_id: o for o in _orders_of(support_desk, customer_id)}
    lowered = reply.lower()
    for other in support_desk.customers():
        if other.customer_id == customer_id:
            continue
        for label, value in (("customer id", other.customer_id), ("e-mail", other.email), ("name", other.name)):
            if value and len(value) > 3 and re.search(rf"(?<!\w){re.escape(value.lower())}(?!\w)", lowered):
                found.append(
                    Violation(rule="other_customer_data", detail=f"mentions another customer's {label}: {value}")
                )
    for order_id in sorted(set(ORDER_ID.findall(reply)) - set(own_orders)):
        try:
            owner = support_desk.order(order_id).customer_id
        except SupportDeskError:
            continue  # no such order: an example id, not anybody's data
        found.append(Violation(rule="other_customer_data", detail=f"mentions order {order_id} of customer {owner}"))
    allowed = 0.0
    for order_id in own_orders:
        try:
            allowed = max(allowed, support_desk.quote_refund(order_id, as_of).amount_eur)
        except SupportDeskError:
            continue
    for amount in promised_refunds(reply):
        if amount > refund_limit:
            found.append(
                Violation(
                    rule="refund_over_limit",
                    detail=f"promises {amount:g} EUR, over the {refund_limit:g} EUR limit per reply",
                )
            )
        elif amount > allowed + 0.005:
            found.append(
                Violation(
                    rule="refund_over_limit",
                    detail=f"promises {amount:g} EUR; the policy allows at most {allowed:g} EUR for this customer's orders",
                )
            )
    if screened := screen(reply).flagged:
        found.append(
            Violation(rule="planted_instruction", detail=f"the reply carries instructions: {screened[0].reason}")
        )
    if match := _COMPLIANCE.search(reply):
        found.append(
            Violation(rule="planted_instruction", detail=f"the reply complies with an override: {match.group()!r}")
        )
    planted = set().union(*(_word_runs(t, REPEAT_WORDS) for t in flagged_text)) if flagged_text else set()
    if planted & _word_runs(reply, REPEAT_WORDS):
        found.append(
            Violation(rule="planted_instruction", detail="the reply repeats the instruction flagged in the ticket")
        )
    return found


def _orders_of(support_desk: SupportDeskResource, customer_id: str) -> list:
    try:
        return support_desk.orders_of(customer_id)
    except SupportDeskError:
        return []
