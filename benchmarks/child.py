"""Running a benchmark's variant in a fresh process: the code it runs to measure its own peak memory, and its figures."""

from __future__ import annotations

import json
import subprocess

PEAK = """
def peak_rss_mb():  # VmHWM: this process's own high-water mark (ru_maxrss carries the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""
"""Code for a benchmark's child process: its own peak resident memory in MB."""


def child_figures(command: list[str], env: dict[str, str] | None = None) -> dict:
    """Run a child process (in ``env``, default this one's) and return the JSON object it prints last; stop the
    benchmark with its error output if it fails."""
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"a benchmark's child process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
