"""Ports for the servers the tests start, safe when the suite runs on several workers (xdist).

Binding port 0 and closing the probe hands out a port of the kernel's ephemeral range, which
the kernel gives out again, to another worker's probe or as the source port of any outgoing
connection (the suite opens thousands), before the test's server has bound it. So a port is
taken from below that range (Linux: 32768-60999), in a block of its own for each worker of the
session, at a random place in it (other test sessions on the machine use the same blocks),
never twice in one process, and only once a probe could bind it.
"""

from __future__ import annotations

import os
import random
import socket
import threading

FIRST_PORT = 20_000
LAST_PORT = 32_000  # exclusive; the ephemeral range starts at 32768
_handed_out: set[int] = set()
_lock = threading.Lock()
_random = random.Random()  # seeded from the OS: each process starts at another place


def worker_block() -> range:
    """This worker's ports: the range split evenly among the session's xdist workers (all of it
    without xdist)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    size = (LAST_PORT - FIRST_PORT) // max(count, 1)
    start = FIRST_PORT + (index % max(count, 1)) * size
    return range(start, start + size)


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on and that no other test of this session is given."""
    block = worker_block()
    with _lock:
        for _ in range(len(block)):
            port = _random.choice(block)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free port in {block.start}-{block.stop - 1}")
