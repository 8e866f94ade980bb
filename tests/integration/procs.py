"""Helpers for tests that kill real processes: run the CLI, watch manifests, find workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).parents[2]


def start_cli(*args: str) -> subprocess.Popen:
    """``python -m ray_dissect ARGS`` in its own process group."""
    return subprocess.Popen([sys.executable, "-m", "ray_dissect", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process and everything in its group."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def wait_for(predicate: Callable[[], bool], timeout: float, proc: subprocess.Popen | None = None,
             what: str = "condition") -> None:
    """Poll every 20 ms; fail if the process exits first or time runs out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"process ended before {what}: {out[-2000:]}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def worker_pids(title: str) -> list[int]:
    """PIDs of Ray worker processes whose title contains ``title`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if cmd.startswith("ray::") and title in cmd:
                pids.append(int(entry.name))
    return pids
