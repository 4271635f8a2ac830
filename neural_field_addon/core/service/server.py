"""Warm worker: python -m <package>.core.service.server [--idle SECONDS] [--device auto|cpu|cuda]

The training worker kept alive between jobs, so a click pays for its work and not for starting
Python, importing PyTorch and loading kernels (seconds each time). Requests arrive on stdin, one
JSON object a line; replies and job messages leave on stdout, as worker.py's do:

  {"type": "job", "id": k, "path": JOB.json}
      runs a job file (worker.py's format, paths relative to its folder); every message of the
      job is worker.py's with "job": k, the last {"type": "done", "job": k, "ok": bool, "seconds": s}
  {"type": "cancel", "id": k}
      stops job k at its next progress report: {"type": "cancelled", "job": k}, then its "done"
  {"type": "status"}
      -> {"type": "status", "pid": p, "jobs": n, "cuda_reserved": bytes the caching allocator holds}
  {"type": "quit"}            (or stdin closed: the client is gone)

Once its imports are done it says {"type": "ready", "pid": p, "python": ..., "seconds": s}; a
Python that cannot run jobs (missing dependencies) says {"type": "unusable", "message": ...} and
exits with 2. It exits by itself after --idle seconds without a job (0: never), and when the
process that started it is gone (its parent's pid changes), so no worker outlives Blender.
Between jobs it hands PyTorch's cached GPU memory back to the driver: only the CUDA context
stays, and the viewport and Cycles keep the rest.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import queue
import sys
import threading
import time

from . import caches
from .protocol import Channel, exit_with_parent, read_requests
from .worker import JobCancelled, read_job, run_job, unusable_reason

# What every job kind imports: loaded once at start, so the first job does not wait for them.
WARM_MODULES = ("torch", "numpy", "skimage.measure", "scipy.sparse.csgraph",
                "..fitting.fitter", "..fitting.space_fitter", "..surface.extraction", "..surface.metrics",
                "..geometry.query", ".runners", ".tasks")


class JobChannel:
    """The channel's messages of one job, each tagged with its id."""

    def __init__(self, channel: Channel, job_id):
        self.channel, self.job_id = channel, job_id

    def send(self, kind: str, **payload) -> None:
        self.channel.send(kind, job=self.job_id, **payload)


class Requests:
    """stdin's requests in a queue, read by a thread; cancels are recorded as they arrive, so the
    running job (on the main thread) sees them at its next progress report."""

    def __init__(self, stream):
        self.queue: queue.Queue = queue.Queue()
        self.cancelled: set = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for request in read_requests(stream):
            if request.get("type") == "cancel":
                with self._lock:
                    self.cancelled.add(request.get("id"))
            self.queue.put(request)
        self.queue.put({"type": "quit"})

    def is_cancelled(self, job_id) -> bool:
        with self._lock:
            return job_id in self.cancelled


def warm(device: str) -> None:
    """Import what jobs need and, for a GPU worker, create the CUDA context."""
    for name in WARM_MODULES:
        try:
            importlib.import_module(name, package=__package__)
        except ImportError:  # an optional library (scikit-image on a minimal install): the job says
            pass
    if device != "cpu":
        import torch

        if torch.cuda.is_available():
            torch.cuda.init()


def _cuda():
    """torch.cuda where a job has made a CUDA context in this process, else None."""
    torch = sys.modules.get("torch")
    return torch.cuda if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized() else None


def release_memory() -> None:
    """Return the caching allocator's free blocks to the driver (the context stays)."""
    gc.collect()
    cuda = _cuda()
    if cuda is not None:
        cuda.empty_cache()


def _cuda_reserved() -> int:
    cuda = _cuda()
    return 0 if cuda is None else int(cuda.memory_reserved())


def serve_job(request: dict, channel: Channel, requests: Requests) -> None:
    job_id = request.get("id")
    tagged = JobChannel(channel, job_id)
    start = time.perf_counter()
    ok = False
    try:
        path = os.path.abspath(str(request.get("path", "")))
        try:
            job = read_job(path)
        except (OSError, ValueError) as error:
            tagged.send("error", task=None, message=f"cannot read job file {path}: {error}")
        else:
            ok = run_job(job, os.path.dirname(path), tagged, cancelled=lambda: requests.is_cancelled(job_id))
    except JobCancelled:
        tagged.send("cancelled")
    finally:
        release_memory()
        tagged.send("done", ok=ok, seconds=time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="server", description="the warm training worker")
    parser.add_argument("--idle", type=float, default=0.0, help="exit after this many seconds without a job")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    caches.configure()  # before Numba or Triton is imported
    channel = Channel()
    stdin, sys.stdin = sys.stdin, open(os.devnull)  # nothing else may read the request stream
    exit_with_parent()
    reason = unusable_reason()
    if reason:
        channel.send("unusable", message=reason)
        return 2
    requests = Requests(stdin)
    warm(args.device)
    channel.send("ready", pid=os.getpid(), python=sys.executable, seconds=time.perf_counter() - start)
    jobs = 0
    while True:
        try:
            request = requests.queue.get(timeout=args.idle if args.idle > 0 else None)
        except queue.Empty:
            channel.send("exit", reason="idle")
            return 0
        kind = request.get("type")
        if kind == "quit":
            return 0
        if kind == "job":
            serve_job(request, channel, requests)
            jobs += 1
        elif kind == "status":
            channel.send("status", pid=os.getpid(), jobs=jobs, cuda_reserved=_cuda_reserved())
        elif kind != "cancel":  # a cancel for a job that has ended is nothing to do
            channel.send("error", job=request.get("id"), task=None, message=f"unknown request {kind!r}")


if __name__ == "__main__":
    sys.exit(main())
