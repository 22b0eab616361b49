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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

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
        self.calls: list[dict[str, Any]] = []
        self.faults: list[Fault] = []  # consumed one per request, first in first out
        self.persistent_fault: Fault | None = None  # applied to every request while set
        self.fault_source: Callable[[], Fault | None] | None = (
            None  # e.g. random_faults(0.3): a fault per request, or None
        )
        self.requests = 0
        self.latency_seconds = 0.0  # every chat answer is held this long, as a model would take
        self.embedding_requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.received: list[Exchange] = []  # every request, as it arrived
        self.answered: list[Exchange] = []  # every answer, once fully sent
        self.answering = threading.Event()  # cleared: answers are held (requests stay in flight) until set
        self.answering.set()
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
        self.latency_seconds = 0.0

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

    def _answer(self, body: dict[str, Any], content: str | None = None) -> tuple[int, dict[str, Any]]:
        schema = request_name(body)
        with self._lock:
            self.calls.append(
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
        script = self.scripts.get(schema)
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
                if self.path.endswith("/_calls"):  # the call log, for a client in another process
                    with fake._lock:
                        payload = {"calls": list(fake.calls), "embedding_requests": fake.embedding_requests}
                    self._send(200, payload, {})
                else:
                    self._send(404, {"error": {"message": f"unknown path {self.path}"}}, {})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
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
                elif self.path.endswith("/chat/completions"):
                    status, payload = fake._answer(body, fault.content if fault is not None else None)
                else:
                    status, payload = 404, {"error": {"message": f"unknown path {self.path}"}}
                fake.answering.wait()
                self._send(status, payload, headers)
                fake._log(fake.answered, body, status)

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


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
