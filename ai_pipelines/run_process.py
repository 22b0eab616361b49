"""The process a run executes in, written on the run as tags.

A run that the CLI executes in its own process (in-process execution, no run launcher)
has nobody watching it: if that process is killed, the instance keeps the run STARTED
forever. Tagging the run with the host, the pid and the process's start time lets a
later process on the same host tell, safely, that the run's process is gone; the start
time guards against a recycled pid, which alone would make a dead run look alive, and
the pid namespace against containers that share a host name but not their pids.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Mapping

from pydantic import BaseModel

HOST_TAG = "ai_pipelines/host"
PID_TAG = "ai_pipelines/pid"
STARTED_TAG = "ai_pipelines/process_started"
NAMESPACE_TAG = "ai_pipelines/pid_namespace"
PROCESS_TAGS = (HOST_TAG, PID_TAG, STARTED_TAG, NAMESPACE_TAG)


def pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _proc_stat(pid: int) -> list[str]:
    """Fields 3 onwards of /proc/<pid>/stat; empty where /proc is missing (not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return stat.rsplit(")", 1)[1].split()


def process_start_identity(pid: int) -> str:
    """The boot and the start time (clock ticks since boot) of a process, from /proc.

    Empty where /proc is missing (not Linux) or the process is gone; a pid's liveness
    is then all that can be checked.
    """
    fields = _proc_stat(pid)
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""
    return f"{boot}:{fields[19]}" if len(fields) > 19 else ""  # field 22, starttime


class RunProcess(BaseModel):
    host: str
    pid: int
    started: str = ""
    namespace: str = ""

    @classmethod
    def current(cls) -> "RunProcess":
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            started=process_start_identity(os.getpid()),
            namespace=pid_namespace(),
        )

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> "RunProcess | None":
        if HOST_TAG not in tags or not tags.get(PID_TAG, "").isdigit():
            return None
        return cls(
            host=tags[HOST_TAG],
            pid=int(tags[PID_TAG]),
            started=tags.get(STARTED_TAG, ""),
            namespace=tags.get(NAMESPACE_TAG, ""),
        )

    def tags(self) -> dict[str, str]:
        return {HOST_TAG: self.host, PID_TAG: str(self.pid), STARTED_TAG: self.started, NAMESPACE_TAG: self.namespace}

    def is_visible_from(self, other: "RunProcess") -> bool:
        """Whether `other` can see this process: same host, same pid namespace."""
        return self.host == other.host and self.namespace == other.namespace

    def is_gone(self) -> bool:
        """Whether this process no longer exists. Only meaningful where it is visible."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, owned by another user
        if _proc_stat(self.pid)[:1] == ["Z"]:
            return True  # killed, not yet reaped by its parent
        now = process_start_identity(self.pid)
        return bool(self.started and now and now != self.started)  # the pid was reused
