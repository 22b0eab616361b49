"""A deterministic OpenAI-compatible chat server for tests, over real HTTP on 127.0.0.1.

Answers are derived from the prompt by per-schema scripts (the schema name comes
from `response_format.json_schema.name`), so the product code under test takes the
same path as with a hosted provider. Tests can replace a script, e.g. to return
invalid answers for one document, and read how many calls were made.

`latency_seconds` holds every chat answer for a fixed time, as a provider's model
does, so benchmarks can compare wall times with the physical limit. `/v1/embeddings`
answers with deterministic hashed bag-of-words vectors: a remote embedder that is
never the bottleneck and still ranks texts sharing words above texts that do not.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import random
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Literal

from tests.fake_triage import TRIAGE_SCRIPTS

Script = Callable[[list[dict[str, str]]], Any]
_NAME = re.compile(r"\b[A-Z][a-z]+(?: [A-Z][a-z]+)+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def numbered_sentences(messages: list[dict[str, str]]) -> list[str]:
    return re.findall(r"^\[\d+\] (.+)$", messages[0]["content"], flags=re.M)


# A careful reader's cues, as rules over the sentence: who a name is, what a number measures
# and whether the news is good, so that the default extraction is one a correct model could give.
_ROLE_BEFORE = re.compile(r"(?:executive|officer|chair|director|research|founder)\s+$", re.I)
_PERSON_AFTER = re.compile(r"^(?:,? (?:chief|who)\b|\s+(?:stepped|took|previously|told|said)\b)")
_COMPANY_WORDS = frozenset(
    "robotics grid foods ledger capital research analytics data freight energia bank livs".split()
)
_PLACE_BEFORE = re.compile(r"\b(?:in|near|of)\s+(?:the\s+)?$")
_PRODUCT_AFTER = re.compile(r"^\s+(?:robots?|modules?|batteries|card|platform|pallet)\b")
_GOOD_NEWS = frozenset(
    "launched launches unveils raised raises profit profitable growth grew record won higher expands opened signed "
    "started finished completed complete delivered hired acquire passes receives double".split()
)
_BAD_NEWS = frozenset("recall recalled recalls outage delayed delay loss unavailable failed faults warned fell".split())


def entity_kind(sentence: str, name: str) -> str:
    at = sentence.find(name)
    before, after = sentence[:at], sentence[at + len(name) :]
    if name.split()[-1].lower() in _COMPANY_WORDS:
        return "company"
    if _ROLE_BEFORE.search(before) or _PERSON_AFTER.match(after):
        return "person"
    if _PLACE_BEFORE.search(before):
        return "place"
    return "product" if _PRODUCT_AFTER.match(after) else "company"


def figure_label(sentence: str, number: str) -> str:
    """The words before the number in its sentence (after it when fewer than two come before)."""
    at = sentence.find(number)
    before = re.findall(r"[A-Za-z]+", sentence[:at])[-3:]
    words = before if len(before) >= 2 else re.findall(r"[A-Za-z]+", sentence[at + len(number) :])[:3]
    return " ".join(words) or "figure"


def tone(sentences: list[str]) -> str:
    words = {w for s in sentences for w in re.findall(r"[a-z]+", s.lower())}
    good, bad = bool(words & _GOOD_NEWS), bool(words & _BAD_NEWS)
    return "mixed" if good and bad else "positive" if good else "negative" if bad else "neutral"


def extract_signals(messages: list[dict[str, str]]) -> dict[str, Any]:
    """Names and numbers taken from the numbered sentences, each citing its sentence, with
    kinds, labels and tone read from the words around them."""
    sentences = numbered_sentences(messages)
    title = data_block(messages, "title") or ""
    entities, figures = [], []
    for index, sentence in enumerate(sentences):
        for name in _NAME.findall(sentence)[:1]:
            if name not in {e["name"] for e in entities} and len(entities) < 4:
                entities.append({"name": name, "kind": entity_kind(sentence, name), "sentence": index})
        for number in _NUMBER.findall(sentence)[:1]:
            if len(figures) < 2:
                figures.append({"label": figure_label(sentence, number), "value": number, "sentence": index})
    first = sentences[0] if sentences else ""
    return {
        "entities": entities,
        "events": [{"description": " ".join(first.split()[:8]), "sentence": 0}],
        "key_figures": figures,
        "sentiment": tone([title, *sentences]),
        "sentiment_sentence": 0,
    }


def data_block(messages: list[dict[str, str]], tag: str) -> str | None:
    """The text of the prompt's <tag>...</tag> data block (the product's delimited evidence)."""
    match = re.search(rf"^<{tag}>\n(.*?)\n</{tag}>$", messages[0]["content"], flags=re.M | re.S)
    return match.group(1) if match else None


def rewrite_claim(messages: list[dict[str, str]]) -> dict[str, Any]:
    evidence = data_block(messages, "evidence")
    return {"claim": evidence if evidence else "No evidence given."}


def evidence_items(messages: list[dict[str, str]]) -> list[tuple[int, str]]:
    """The numbered evidence list of a drafting or revision prompt: (number, sentence) per "[n] (source) sentence" line."""
    block = data_block(messages, "evidence") or ""
    return [(int(n), sentence) for n, sentence in re.findall(r"^\[(\d+)\] \(.*?\) (.+)$", block, flags=re.M)]


def numbered_claims(messages: list[dict[str, str]]) -> list[tuple[int, str]]:
    """The numbered claims of a summary prompt: (number, text) per "[n] text" line."""
    block = data_block(messages, "evidence") or ""
    return [(int(n), text) for n, text in re.findall(r"^\[(\d+)\] (.+)$", block, flags=re.M)]


def write_brief(messages: list[dict[str, str]]) -> dict[str, Any]:
    """A brief of the evidence sentences as written, each citing its own item (up to eight)."""
    return {"sentences": [{"text": s, "evidence": [n]} for n, s in evidence_items(messages)[:8]]}


def revise_claim(messages: list[dict[str, str]]) -> dict[str, Any]:
    """Revises to the evidence item sharing most words with the claim, citing it."""
    claim = set((data_block(messages, "claim") or "").lower().split())
    items = evidence_items(messages)
    if not items:
        return {"action": "withdraw", "sentence": "", "evidence": []}
    number, sentence = max(items, key=lambda item: len(claim & set(item[1].lower().split())))
    return {"action": "revise", "sentence": sentence, "evidence": [number]}


def split_claim(messages: list[dict[str, str]]) -> dict[str, Any]:
    """One atomic claim: the sentence itself."""
    return {"claims": [data_block(messages, "claim") or "No claim given."]}


def write_paragraph(messages: list[dict[str, str]]) -> dict[str, Any]:
    """A paragraph of the claims as written, each citing itself (up to six)."""
    return {"sentences": [{"text": t, "claims": [n]} for n, t in numbered_claims(messages)[:6]]}


_INSTRUCTION_CUE = re.compile(
    r"\b(?:ignore|disregard|assistant|you must|instructions?|prompt|say|write that|mark|label)\b", re.I
)


def judge_injection(messages: list[dict[str, str]]) -> dict[str, Any]:
    """Flags the screened text when it holds an instruction cue, as a real classifier would."""
    text = data_block(messages, "text") or ""
    cue = _INSTRUCTION_CUE.search(text)
    return {"flagged": bool(cue), "reason": f"addresses a model ({cue.group()!r})" if cue else ""}


def write_headline(messages: list[dict[str, str]]) -> dict[str, Any]:
    """A headline and metadata taken from the topic and the summary's first words."""
    topic = (data_block(messages, "topic") or "news").strip()
    summary = " ".join((data_block(messages, "summary") or "").split())
    meta = summary if len(summary) <= 150 else summary[:150].rsplit(" ", 1)[0]  # whole words, as a writer would
    return {
        "headline": f"{topic}: what the sources say"[:80],
        "meta_description": meta or topic,
        "keywords": [topic[:30]],
    }


_ECHO_CUE = re.compile(r"\b(?:at most|characters|search results|keywords?|summary|metadata|gist)\b", re.I)
_CONTENT_WORD = re.compile(r"[a-z]{4,}")


def judge_rubric(messages: list[dict[str, str]]) -> dict[str, Any]:
    """A capable judge, by rules over what it is shown: an answer fails when it is empty,
    talks about its own instructions, asks a question, is a bare list, states a number or a
    name its input lacks, or shares almost no words with its input."""
    given = json.loads(data_block(messages, "input") or "{}")
    answer = json.loads(data_block(messages, "answer") or "{}")
    source = " ".join(str(v) for v in given.values())
    source_words = set(re.findall(r"[a-z0-9]+", source.lower()))
    texts = [v for v in answer.values() if isinstance(v, str)]

    def fault(text: str) -> str:
        cue = _ECHO_CUE.search(text)
        if cue and cue.group().lower() not in source.lower():
            return f"talks about its instructions ({cue.group()!r})"
        if text.rstrip().endswith("?"):
            return "a question, not a statement"
        if text.count(",") >= 2 and len(text.split()) <= 10:
            return "a list of keywords, not a sentence"
        numbers = set(_NUMBER.findall(text)) - set(_NUMBER.findall(source))
        names = {w.lower() for w in re.findall(r"(?<=\s)[A-Z][a-z]+", text)} - source_words
        if numbers or names:
            return f"states what its input does not ({', '.join(sorted(numbers | names))})"
        words = set(_CONTENT_WORD.findall(text.lower()))
        if len(text.split()) >= 3 and words and len(words & source_words) / len(words) < 0.3:  # a label is no text
            return "off topic"
        return ""

    empty = [k for k, v in answer.items() if v in ("", None, [])]
    faults = [f"empty: {', '.join(empty)}"] if empty else [f for f in map(fault, texts) if f]
    return {"passed": not faults, "reason": "; ".join(faults)[:200] or "meets the rubric"}


DEFAULT_SCRIPTS: dict[str, Script] = {
    "ExtractedSignals": extract_signals,
    "ClaimRewrite": rewrite_claim,
    "JudgeAnswer": lambda messages: {"verdict": "supported"},
    "InjectionVerdict": judge_injection,
    "DraftBrief": write_brief,
    "ClaimRevision": revise_claim,
    "AtomicClaims": split_claim,
    "TopicParagraph": write_paragraph,
    "SummaryHeadlinesAnswer": write_headline,
    "RubricVerdict": judge_rubric,
    **TRIAGE_SCRIPTS,
}


@dataclass
class Fault:
    """What to do to one request instead of answering it normally."""

    status: int = 500
    retry_after: float | None = None
    delay_seconds: float = 0.0  # with status 0: answer normally, but only after the delay
    message: str = (
        ""  # the error message; "{api_key}" is replaced by the request's bearer token, as some providers echo it
    )
    content: str | None = (
        None  # with status 0: answer 200 with this text instead of the script's (malformed or invalid)
    )


def random_faults(rate: float, seed: int = 0, timeout_delay: float = 1.0) -> Callable[[], Fault | None]:
    """A seeded mix of what providers do wrong, hitting `rate` of the requests: 429 with
    Retry-After, 500, a stall past the client's timeout, malformed JSON, and JSON that
    does not match the schema. Returns the fault for the next request, or None."""
    rng = random.Random(seed)
    kinds = [
        Fault(status=429, retry_after=0.01),
        Fault(status=500),
        Fault(status=0, delay_seconds=timeout_delay),
        Fault(status=0, content='{"entities": [ {"name": '),
        Fault(status=0, content='{"unexpected": "shape"}'),
    ]

    def next_fault() -> Fault | None:
        return rng.choice(kinds) if rng.random() < rate else None

    return next_fault


EMBEDDING_DIMENSIONS = 384
_WORD = re.compile(r"\w+")


def hashed_embedding(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A normalized bag-of-words vector: each lower-cased word adds 1 at its hash's position."""
    vector = [0.0] * dimensions
    for word in _WORD.findall(text.lower()):
        vector[int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big") % dimensions] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


class _ListeningServer(ThreadingHTTPServer):
    """A listen backlog of 128, not http.server's 5: sixteen clients opening connections at
    once on a busy machine otherwise overflow it, and the kernel resets the connections
    that do not fit (a fault of the test server, not of the code under test)."""

    request_queue_size = 128


def _base64_floats(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


TOOLS = "tools"  # the script name of requests that offer tools (function calling)


def request_name(body: dict[str, Any]) -> str:
    """The script a request goes to: its response schema's name, or TOOLS when it offers tools."""
    if body.get("tools"):
        return TOOLS
    return (body.get("response_format") or {}).get("json_schema", {}).get("name", "")


def assistant_message(answer: Any) -> tuple[dict[str, Any], str]:
    """An OpenAI assistant message and finish reason from a script's answer: text, a JSON
    value (a structured answer), or for tool requests {"content": ..., "tool_calls": [{"name", "arguments"}]}."""
    if isinstance(answer, dict) and "tool_calls" in answer:
        calls = [
            {
                "id": call.get("id") or f"call_{index}",
                "type": "function",
                "function": {
                    "name": call["name"],
                    "arguments": call["arguments"]
                    if isinstance(call.get("arguments"), str)
                    else json.dumps(call.get("arguments", {})),
                },
            }
            for index, call in enumerate(answer["tool_calls"])
        ]
        message = {"role": "assistant", "content": answer.get("content") or None}
        if calls:
            message["tool_calls"] = calls
        return message, "tool_calls" if calls else "stop"
    content = answer if isinstance(answer, str) else json.dumps(answer)
    return {"role": "assistant", "content": content}, "stop"


def messages_hash(messages: list[dict[str, str]]) -> str:
    """Names a request by its messages, so a test can tell whether the same call was made twice."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


ContextErrorStyle = Literal["openai", "vllm", "llamacpp"]
ContentPolicyStyle = Literal["openai", "azure", "finish_reason", "refusal"]


def context_window_error(
    style: ContextErrorStyle, window: int, prompt_tokens: int, max_tokens: int
) -> tuple[int, dict[str, Any]]:
    """The 400 a provider answers a prompt over its context window with, as each one words it."""
    requested = prompt_tokens + max_tokens
    if style == "llamacpp":  # llama.cpp's server
        return 400, {
            "error": {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": prompt_tokens,
                "n_ctx": window,
            }
        }
    message = (
        f"This model's maximum context length is {window} tokens. However, you requested {requested} tokens "
        f"({prompt_tokens} in the messages, {max_tokens} in the completion). "
        "Please reduce the length of the messages or completion."
    )
    if style == "vllm":  # vLLM's OpenAI server: the error object at the top level
        return 400, {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}
    return 400, {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    }


def content_policy_refusal(style: ContentPolicyStyle, model: str, prompt_tokens: int) -> tuple[int, dict[str, Any]]:
    """A provider's refusal of a prompt against its content policy: OpenAI's and Azure OpenAI's
    400s, or a 200 whose answer the filter withheld or whose model refused (structured outputs)."""
    if style == "openai":
        return 400, {
            "error": {
                "code": "content_policy_violation",
                "message": "Your request was rejected as a result of our safety system. Your prompt may contain text "
                "that is not allowed by our safety system.",
                "param": None,
                "type": "invalid_request_error",
            }
        }
    if style == "azure":
        filtered = {"filtered": False, "severity": "safe"}
        return 400, {
            "error": {
                "code": "content_filter",
                "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management "
                "policy. Please modify your prompt and retry. To learn more about our content filtering policies "
                "please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
                "param": "prompt",
                "type": None,
                "status": 400,
                "innererror": {
                    "code": "ResponsibleAIPolicyViolation",
                    "content_filter_result": {
                        "hate": filtered,
                        "jailbreak": {"filtered": False, "detected": False},
                        "self_harm": filtered,
                        "sexual": filtered,
                        "violence": {"filtered": True, "severity": "medium"},
                    },
                },
            }
        }
    if style == "finish_reason":
        message, finish = {"role": "assistant", "content": None}, "content_filter"
    else:
        message, finish = (
            {"role": "assistant", "content": None, "refusal": "I'm sorry, I can't help with that."},
            "stop",
        )
    return 200, {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "finish_reason": finish, "message": message}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 0, "total_tokens": prompt_tokens},
    }


@dataclass(frozen=True)
class Exchange:
    """One request as the server saw it: when it arrived, or when its answer was fully sent."""

    at: float  # time.monotonic()
    schema: str
    messages_hash: str
    status: int = 0  # of the answer; 0 in the log of arrivals


class FakeOpenAI:
    """Start with `with FakeOpenAI() as server:`; `server.base_url` is the /v1 endpoint."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = dict(DEFAULT_SCRIPTS)
        # Per (schema, model): a script that answers only that model's requests, checked before `scripts`.
        self.model_scripts: dict[tuple[str, str], Script] = {}
        self.calls: list[dict[str, Any]] = []
        self.faults: list[Fault] = []  # consumed one per request, first in first out
        self.persistent_fault: Fault | None = None  # applied to every request while set
        self.fault_source: Callable[[], Fault | None] | None = (
            None  # e.g. random_faults(0.3): a fault per request, or None
        )
        self.requests = 0
        self.latency_seconds = 0.0  # every chat answer is held this long, as a model would take
        # Refusals as providers word them (`context_window_error`, `content_policy_refusal`).
        self.context_window_tokens = 0  # 0 = unlimited
        self.context_error_style: ContextErrorStyle = "openai"
        self.content_policy: Callable[[list[dict[str, str]]], bool] | None = None  # True: refuse these messages
        self.content_policy_style: ContentPolicyStyle = "openai"
        self.refused = 0  # requests refused either way
        self.embedding_requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.received: list[Exchange] = []  # every request, as it arrived
        self.answered: list[Exchange] = []  # every answer, once fully sent
        self.answering = threading.Event()  # cleared: answers are held (requests stay in flight) until set
        self.answering.set()
        self.batch_api = FakeBatchAPI(self)  # /v1/files and /v1/batches; its lines are not in `calls`
        self._lock = threading.Lock()
        self._server = _ListeningServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def calls_for(self, schema: str) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c["schema"] == schema)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.faults.clear()
            self.persistent_fault = None
            self.fault_source = None
            self.requests = 0
            self.embedding_requests = 0
            self.max_in_flight = 0
            self.received.clear()
            self.answered.clear()
        self.answering.set()
        self.scripts = dict(DEFAULT_SCRIPTS)
        self.model_scripts = {}
        self.latency_seconds = 0.0
        self.context_window_tokens, self.context_error_style = 0, "openai"
        self.content_policy, self.content_policy_style, self.refused = None, "openai", 0
        self.batch_api.reset()

    def _log(self, log: list[Exchange], body: dict[str, Any], status: int = 0) -> None:
        schema = request_name(body)
        with self._lock:
            log.append(Exchange(time.monotonic(), schema, messages_hash(body.get("messages", [])), status))

    def _enter(self, delta: int) -> None:
        with self._lock:
            self.in_flight += delta
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _next_fault(self) -> Fault | None:
        with self._lock:
            self.requests += 1
            if self.faults:
                return self.faults.pop(0)
            return self.fault_source() if self.fault_source is not None else self.persistent_fault

    def __enter__(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(
        self, body: dict[str, Any], content: str | None = None, calls: list[dict[str, Any]] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """`calls` is where the request is logged (default: `self.calls`, the live calls)."""
        schema = request_name(body)
        with self._lock:
            (self.calls if calls is None else calls).append(
                {
                    "schema": schema,
                    "model": body.get("model"),
                    "messages": body["messages"],
                    "response_format": body.get("response_format"),
                    "max_tokens": body.get("max_tokens"),
                    "temperature": body.get("temperature"),
                    "tools": body.get("tools"),
                }
            )
        script = self.model_scripts.get((schema, str(body.get("model")))) or self.scripts.get(schema)
        if script is None:
            return 400, {"error": {"message": f"no script for schema {schema!r}", "type": "invalid_request_error"}}
        if content is None:
            message, finish = assistant_message(script(body["messages"]))
        else:
            message, finish = {"role": "assistant", "content": content}, "stop"
        content = message.get("content") or json.dumps(message.get("tool_calls", []))
        tokens_in = sum(len(str(m.get("content") or "").split()) for m in body["messages"])
        return 200, {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "finish_reason": finish, "message": message}],
            "usage": {
                "prompt_tokens": tokens_in,
                "completion_tokens": len(content.split()),
                "total_tokens": tokens_in + len(content.split()),
            },
        }

    def _refusal(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """The refusal of a chat request over the context window or against the content policy, in
        the configured provider's shape; None when it is answered."""
        messages = body.get("messages", [])
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages)  # as `usage` counts
        max_tokens = int(body.get("max_tokens") or 0)
        if self.context_window_tokens and prompt_tokens + max_tokens > self.context_window_tokens:
            refusal = context_window_error(
                self.context_error_style, self.context_window_tokens, prompt_tokens, max_tokens
            )
        elif self.content_policy is not None and self.content_policy(messages):
            refusal = content_policy_refusal(self.content_policy_style, str(body.get("model")), prompt_tokens)
        else:
            return None
        with self._lock:
            self.refused += 1
        return refusal

    def _embed(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        texts = body.get("input", [])
        texts = [texts] if isinstance(texts, str) else texts
        with self._lock:
            self.embedding_requests += 1
        # As OpenAI's API does: base64 of little-endian float32 when asked (the openai client
        # asks by default), a list of floats otherwise.
        encode = _base64_floats if body.get("encoding_format") == "base64" else (lambda vector: vector)
        return 200, {
            "object": "list",
            "model": body.get("model", "fake-embedder"),
            "data": [
                {"object": "embedding", "index": i, "embedding": encode(hashed_embedding(t))}
                for i, t in enumerate(texts)
            ],
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as providers serve it
            # Headers and body go out in separate writes; with Nagle's algorithm the body would
            # wait for the client's delayed ACK, about 40 ms a call on keep-alive connections.
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def handle(self) -> None:
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout under test)

            def do_GET(self) -> None:
                if fake.batch_api.serves(self.path):
                    self._send_raw(*fake.batch_api.handle("GET", self.path, "", b""))
                elif self.path.endswith("/_calls"):  # the call log, for a client in another process
                    with fake._lock:
                        payload = {"calls": list(fake.calls), "embedding_requests": fake.embedding_requests}
                    self._send(200, payload, {})
                else:
                    self._send(404, {"error": {"message": f"unknown path {self.path}"}}, {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if fake.batch_api.serves(self.path):
                    self._send_raw(*fake.batch_api.handle("POST", self.path, self.headers.get("Content-Type", ""), raw))
                    return
                body = json.loads(raw or b"{}")
                if self.path.endswith("/embeddings"):
                    self._send(*fake._embed(body), {})
                    return
                fake._log(fake.received, body)
                fault = fake._next_fault()
                fake._enter(1)
                try:
                    self._respond(body, fault)
                finally:
                    fake._enter(-1)

            def _respond(self, body: dict[str, Any], fault: Fault | None) -> None:
                if fault is not None:
                    time.sleep(fault.delay_seconds)
                if fake.latency_seconds:
                    time.sleep(fake.latency_seconds)
                headers = {}
                if fault is not None and fault.status:
                    token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    message = fault.message.replace("{api_key}", token) or f"injected {fault.status}"
                    status, payload = fault.status, {"error": {"message": message, "type": "server_error"}}
                    if fault.retry_after is not None:
                        headers["Retry-After"] = str(fault.retry_after)
                elif self.path.endswith("/chat/completions") and (refused := fake._refusal(body)) is not None:
                    status, payload = refused
                elif self.path.endswith("/chat/completions"):
                    status, payload = fake._answer(body, fault.content if fault is not None else None)
                else:
                    status, payload = 404, {"error": {"message": f"unknown path {self.path}"}}
                fake.answering.wait()
                self._send(status, payload, headers)
                fake._log(fake.answered, body, status)

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
                self._send_raw(status, json.dumps(payload).encode(), "application/json", headers)

            def _send_raw(
                self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


# --- The batch API: /v1/files and /v1/batches -----------------------------------------------------

BatchOutcome = Literal["completed", "expired", "cancelled", "failed"]
# What to do to one line of a batch instead of answering it: "error" (a failed line, in the
# error file) or "invalid" (a 200 line whose content does not match the schema); None answers it.
BatchLineFault = Callable[[str, dict[str, Any]], "str | None"]
INVALID_BATCH_CONTENT = '{"unexpected": "shape"}'


class FakeBatchAPI:
    """OpenAI's batch API as the openai client uses it: a JSONL file uploaded to /v1/files
    (multipart, purpose "batch"), a batch created on it, polled, and its output and error files
    downloaded. Each line is answered by the same scripts as a live call, but logged in `lines`,
    not in the server's `calls`, so a test can tell batch answers from live ones.

    A batch is settled on the first poll that is not held (`hold`), as `outcome` says: completed;
    expired (the first half of its lines answered, the rest in the error file as batch_expired);
    cancelled (the first half answered, the rest never run); failed (nothing run, `errors.data`).
    """

    def __init__(self, fake: "FakeOpenAI") -> None:
        self._fake = fake
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.files: dict[str, dict[str, Any]] = {}
        self.contents: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.lines: list[dict[str, Any]] = []  # every batch line answered, logged as `calls` logs a live call
        self.outcome: BatchOutcome = "completed"
        self.line_fault: BatchLineFault | None = None
        self.hold = False  # batches stay in_progress while set
        self.upload_seconds = 0.0  # an upload takes this long, as a large file does (outside the server's lock)

    @staticmethod
    def serves(path: str) -> bool:
        return "/v1/files" in path or "/v1/batches" in path

    def handle(self, method: str, path: str, content_type: str, raw: bytes) -> tuple[int, bytes, str]:
        """Status, body and content type of the answer to one request."""
        parts = path.split("?")[0].rstrip("/").split("/")[2:]  # after /v1
        if parts == ["files"] and method == "POST":
            time.sleep(self.upload_seconds)
        with self._lock:
            if parts == ["files"] and method == "POST":
                return self._json(200, self._upload(content_type, raw))
            if parts[0] == "files" and len(parts) >= 2 and parts[1] in self.files:
                if parts[2:] == ["content"]:
                    return 200, self.contents[parts[1]], "application/octet-stream"
                return self._json(200, self.files[parts[1]])
            if parts == ["batches"] and method == "POST":
                return self._json(200, self._create(json.loads(raw or b"{}")))
            if parts[0] == "batches" and len(parts) >= 2 and parts[1] in self.batches:
                batch = self.batches[parts[1]]
                if parts[2:] == ["cancel"] and method == "POST":
                    if batch["status"] in ("validating", "in_progress"):
                        batch["status"] = "cancelling"
                    return self._json(200, batch)
                return self._json(200, self._settle(batch))
        return self._json(404, {"error": {"message": f"unknown path {path}", "type": "invalid_request_error"}})

    @staticmethod
    def _json(status: int, payload: dict[str, Any]) -> tuple[int, bytes, str]:
        return status, json.dumps(payload).encode(), "application/json"

    def _store(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-{len(self.files) + 1:04d}"
        self.files[file_id] = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        self.contents[file_id] = data
        return self.files[file_id]

    def _upload(self, content_type: str, raw: bytes) -> dict[str, Any]:
        """A multipart/form-data upload (fields `purpose` and `file`), read with the stdlib's MIME parser."""
        message = BytesParser(policy=email_policy).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
        fields = {part.get_param("name", header="content-disposition"): part for part in message.iter_parts()}
        upload = fields["file"]
        purpose = (fields["purpose"].get_payload(decode=True) or b"").decode()
        return self._store(upload.get_payload(decode=True) or b"", upload.get_filename() or "upload.jsonl", purpose)

    def _create(self, request: dict[str, Any]) -> dict[str, Any]:
        batch_id = f"batch_{len(self.batches) + 1:04d}"
        lines = [line for line in self.contents[request["input_file_id"]].decode().splitlines() if line.strip()]
        now = int(time.time())
        self.batches[batch_id] = {
            "id": batch_id,
            "object": "batch",
            "endpoint": request["endpoint"],
            "errors": None,
            "input_file_id": request["input_file_id"],
            "completion_window": request["completion_window"],
            "status": "in_progress",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": now,
            "expires_at": now + 24 * 3600,
            "completed_at": None,
            "expired_at": None,
            "cancelled_at": None,
            "failed_at": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": request.get("metadata"),
        }
        return self.batches[batch_id]

    def _settle(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch as a poll sees it: settled per `outcome` on the first poll not held."""
        if self.hold or batch["status"] not in ("in_progress", "cancelling"):
            return batch
        outcome = "cancelled" if batch["status"] == "cancelling" else self.outcome
        now = int(time.time())
        if outcome == "failed":
            message = "The input file has lines this endpoint does not accept."
            batch.update(status="failed", failed_at=now)
            batch["errors"] = {
                "object": "list",
                "data": [{"code": "invalid_request", "message": message, "line": None}],
            }
            return batch
        lines = [json.loads(line) for line in self.contents[batch["input_file_id"]].decode().splitlines() if line]
        run = lines if outcome == "completed" else lines[: len(lines) // 2]
        output, errors = [], []
        for line in run:
            answered, failed = self._line(line)
            (output if answered else errors).append(answered or failed)
        if outcome == "expired":
            errors += [
                {
                    "id": f"batch_req_{line['custom_id'][:12]}",
                    "custom_id": line["custom_id"],
                    "response": None,
                    "error": {
                        "code": "batch_expired",
                        "message": "This request could not be executed before the completion window expired.",
                    },
                }
                for line in lines[len(run) :]
            ]
        if output:
            batch["output_file_id"] = self._store(self._jsonl(output), f"{batch['id']}_output.jsonl", "batch_output")[
                "id"
            ]
        if errors:
            batch["error_file_id"] = self._store(self._jsonl(errors), f"{batch['id']}_error.jsonl", "batch_output")[
                "id"
            ]
        batch["request_counts"] = {"total": len(lines), "completed": len(output), "failed": len(errors)}
        batch["status"] = outcome
        batch[{"completed": "completed_at", "expired": "expired_at", "cancelled": "cancelled_at"}[outcome]] = now
        return batch

    def _line(self, line: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """One line's output line, or its error line, as OpenAI writes them."""
        custom_id, body = line["custom_id"], line["body"]
        request_id = f"req_{hashlib.sha256(custom_id.encode()).hexdigest()[:12]}"
        fault = self.line_fault(custom_id, body) if self.line_fault is not None else None
        if fault == "error":
            error = {"error": {"message": "The server had an error processing your request.", "type": "server_error"}}
            response = {"status_code": 500, "request_id": request_id, "body": error}
            return None, {"id": f"batch_{request_id}", "custom_id": custom_id, "response": response, "error": None}
        content = INVALID_BATCH_CONTENT if fault == "invalid" else None
        status, payload = self._fake._answer(body, content, calls=self.lines)
        response = {"status_code": status, "request_id": request_id, "body": payload}
        entry = {"id": f"batch_{request_id}", "custom_id": custom_id, "response": response, "error": None}
        return (entry, None) if status == 200 else (None, entry)

    @staticmethod
    def _jsonl(lines: list[dict[str, Any]]) -> bytes:
        return "".join(json.dumps(line) + "\n" for line in lines).encode()


class RemoteFakeOpenAI:
    """A FakeOpenAI in a process of its own (`python -m tests.fake_openai`), so that a
    benchmark's server does not share the interpreter lock, or a core, with the code it
    measures. Same `base_url` and `calls` as the in-process server; latency is fixed at start."""

    def __init__(self, latency_seconds: float = 0.0, answers: dict[str, Any] | None = None) -> None:
        """`answers`: a fixed answer per schema name, beside the default scripts."""
        fixed = [f"--answer={name}={json.dumps(answer)}" for name, answer in (answers or {}).items()]
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.fake_openai", "--latency", str(latency_seconds), *fixed],
            stdin=subprocess.PIPE,  # closed when this process ends, however it ends: the server then exits
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self.base_url = (self._process.stdout.readline() if self._process.stdout else "").strip()
        if not self.base_url.startswith("http://127.0.0.1:"):
            self._process.kill()
            raise RuntimeError(f"the fake OpenAI server did not start (said {self.base_url!r})")
        self.latency_seconds = latency_seconds

    @property
    def calls(self) -> list[dict[str, Any]]:
        import urllib.request

        with urllib.request.urlopen(self.base_url + "/_calls", timeout=30) as response:
            return json.loads(response.read())["calls"]

    def __enter__(self) -> "RemoteFakeOpenAI":
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)


def fixed_answer(answer: Any) -> Script:
    """A script that gives the same answer to every request."""
    return lambda messages: answer


def main() -> None:
    """Serve until terminated; print the base URL first (RemoteFakeOpenAI reads it)."""
    import argparse

    parser = argparse.ArgumentParser(description="A deterministic OpenAI-compatible server on 127.0.0.1.")
    parser.add_argument("--latency", type=float, default=0.0, help="Seconds every chat answer is held.")
    parser.add_argument(
        "--answer", action="append", default=[], metavar="SCHEMA=JSON", help="A fixed answer for a schema."
    )
    args = parser.parse_args()
    # A parent that ignores SIGTERM passes that on; this server must still stop when told.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # And it must not outlive its parent: when the parent's end of stdin closes, exit.
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    with FakeOpenAI() as server:
        server.latency_seconds = args.latency
        for fixed in args.answer:
            name, answer = fixed.split("=", 1)
            server.scripts[name] = fixed_answer(json.loads(answer))
        print(server.base_url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
