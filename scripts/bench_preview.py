"""Live-preview rate: blends of a shape space extracted by the long-lived preview worker.

    python scripts/bench_preview.py --space SPACE.nfield [--device cpu] [--resolution 64]
                                    [--updates 40] [--drag-seconds 5]

The worker is the one the add-on starts (blender/jobs.py PreviewSession -> core/service/preview.py): a
separate process with the space loaded, answering blend requests with meshes in NPZ files. Two
measures, both including reading each mesh back as the add-on does:
- sequential: the next blend is asked for when the previous mesh has arrived (the rate a slider
  can follow at best);
- drag: blends asked for at 60 Hz, as a dragged slider sends them (end to end in --sweep-seconds);
  the worker skips the ones a newer request has overtaken; the rate is meshes received per second.
Issue 6's target at 64^3: at least 10 updates/s with CUDA, at least 2 on two CPU cores.
A space to measure comes from scripts/bench_space.py --save.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import benchlib  # noqa: F401 - the checkout's package on the path
from neural_field_addon.blender.jobs import PreviewSession
from neural_field_addon.core.io.meshio import load_mesh


def wait_for(session: PreviewSession, kind: str, request_id=None, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in session.poll(timeout=0.5):
            if message["type"] == "error":
                raise RuntimeError(message["message"])
            if message["type"] == kind and (request_id is None or message.get("id") == request_id):
                return message
    raise TimeoutError(f"no {kind} reply within {timeout} s")


def triangle(phase: float) -> float:
    """0 -> 1 -> 0 ... with period 2 (a slider dragged back and forth)."""
    phase = phase % 2.0
    return phase if phase <= 1.0 else 2.0 - phase


def mixes(count: int):
    """Mix values in steps of 0.05, back and forth."""
    for k in range(count):
        yield triangle(k / 20.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--drag-seconds", type=float, default=5.0)
    parser.add_argument("--sweep-seconds", type=float, default=2.0,
                        help="drag: seconds the slider takes from one end to the other")
    parser.add_argument("--shapes", default="0,1", help="shape A and shape B")
    args = parser.parse_args()
    a, b = (int(i) for i in args.shapes.split(","))

    start = time.perf_counter()
    session = PreviewSession(os.path.abspath(args.space), device=args.device)
    try:
        loaded = wait_for(session, "loaded")
        load_seconds = time.perf_counter() - start
        # The first blend measures the Lipschitz bound the following ones reuse.
        first = time.perf_counter()
        reply = wait_for(session, "mesh", session.request({a: 1.0}, resolution=args.resolution))
        load_mesh(reply["path"])
        first_seconds = time.perf_counter() - first

        times, vertices = [], []
        for mix in mixes(args.updates):
            begin = time.perf_counter()
            request_id = session.request({a: 1.0 - mix, b: mix}, resolution=args.resolution)
            reply = wait_for(session, "mesh", request_id)
            vertices.append(len(load_mesh(reply["path"]).vertices))
            os.remove(reply["path"])
            times.append(time.perf_counter() - begin)

        received, sent = 0, 0
        begin = time.perf_counter()
        while time.perf_counter() - begin < args.drag_seconds:
            mix = triangle((time.perf_counter() - begin) / args.sweep_seconds)
            session.request({a: 1.0 - mix, b: mix}, resolution=args.resolution)
            sent += 1
            for message in session.poll(timeout=1.0 / 60.0):
                if message["type"] == "mesh":
                    load_mesh(message["path"])
                    os.remove(message["path"])
                    received += 1
                elif message["type"] == "error":
                    raise RuntimeError(message["message"])
        drag_seconds = time.perf_counter() - begin
    finally:
        session.close()

    sequential = len(times) / sum(times)
    print(f"device {loaded['device']}, {loaded['shapes']} shapes, resolution {args.resolution}")
    print(f"worker start and space load {load_seconds:.2f} s; first blend {first_seconds:.2f} s")
    print(f"sequential: {sequential:.1f} updates/s (median {1000 * statistics.median(times):.0f} ms, "
          f"{min(vertices)}-{max(vertices)} vertices)")
    print(f"drag at 60 Hz, end to end in {args.sweep_seconds:g} s: {received / drag_seconds:.1f} updates/s "
          f"({sent} requests, {received} meshes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
