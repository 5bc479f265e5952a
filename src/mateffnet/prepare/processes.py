"""How `mateffnet prepare` starts its worker processes: forked from a server process that has the heavy
modules imported already (torch alone takes seconds), started as soon as the command begins so that its
imports run beside the main process's own. This module imports neither torch nor numpy."""

from __future__ import annotations

import multiprocessing
import sys

# The third-party ones are listed too: Python 3.11's server ignores sys.path changes, so mateffnet itself
# only preloads when it is installed (or on PYTHONPATH). Not torchvision: it imports torch._dynamo, which
# takes as long as torch itself and would hold up the first worker; the workers need none of it (their JPEGs
# are encoded with Pillow, `io.jpeg`).
PRELOAD = ["numpy", "torch", "av", "mateffnet.prepare.worker"]


def worker_context():
    """The multiprocessing context the workers start from: a forkserver (spawn on Windows)."""
    context = multiprocessing.get_context("forkserver" if sys.platform != "win32" else "spawn")
    if hasattr(context, "set_forkserver_preload"):
        context.set_forkserver_preload(PRELOAD)
    return context


def start_worker_server() -> None:
    """Start the forkserver now; it imports `PRELOAD` in the background, and the first worker forks from it."""
    if worker_context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()
