"""Live preview server: python -m <package>.core.service.preview

A long-lived process that keeps one shape space loaded, so each position of a dragged slider
costs one extraction, not a process start, imports and a file load (seconds). It speaks JSON
lines, requests on stdin and replies on stdout:

  {"type": "load", "path": SPACE, "device": "auto" | "cpu" | "cuda"}
      -> {"type": "loaded", "shapes": n, "names": [...], "device": D, "seconds": s}
  {"type": "blend", "id": k, "weights": {"I": w, ...}, "slerp": bool, "resolution": R,
   "level": L, "out": NPZ}
      -> {"type": "mesh", "id": k, "path": NPZ, "vertices": v, "faces": f, "seeded": bool, "seconds": s}
         and, when no request follows for a moment and a full extraction of a seeded blend finds
         more or less surface, a second "mesh" of the same id with "refined": true
  {"type": "quit"}                  (or stdin closed: the client is gone; or its parent process ended)
  any failure -> {"type": "error", "id": k or null, "message": ...}

Requests that arrive while a blend is being extracted are coalesced: only the newest blend is
answered, since a dragged slider wants its latest position, not the backlog. The surface is
written atomically to the request's NPZ (arrays never travel through the pipe).
"""

from __future__ import annotations

import collections
import os
import queue
import sys
import threading
import time
import traceback

from .protocol import Channel, exit_with_parent, read_requests

PREVIEW_RESOLUTION = 64
# Tiles of the preview's band: the thinnest band on the CPU, where samples cost most.
PREVIEW_TILE = {"cpu": 2}
# Seconds without a request after which the last blend is checked by a full extraction.
REFINE_AFTER = 0.3


def _read_requests(stream, pending: queue.Queue) -> None:
    for request in read_requests(stream):
        pending.put(request)
    pending.put({"type": "quit"})


def _next_request(requests: queue.Queue, pending: collections.deque, timeout=None) -> dict:
    """The request to answer now, in arrival order, except that a blend followed by another
    blend is skipped (loads and quits never are). Raises queue.Empty after `timeout` seconds
    without one."""
    if not pending:
        pending.append(requests.get(timeout=timeout))
    while True:
        try:
            pending.append(requests.get_nowait())
        except queue.Empty:
            break
    request = pending.popleft()
    while request.get("type") == "blend" and pending and pending[0].get("type") == "blend":
        request = pending.popleft()
    return request


class PreviewServer:
    def __init__(self):
        self.space = None
        # The Lipschitz bound measured on the first blend, reused for the next ones: along a
        # slider the field changes little, and closure completes the surface wherever the
        # classification kept too few cells.
        self.lipschitz = None
        # The surface tiles of the last blend (and its resolution): the next blend, a small
        # step along the slider, starts its band there instead of classifying the grid, which
        # is most of the samples at 64^3. A full extraction checks the result once the slider
        # rests (refine), so a part that appeared away from the old surface is not missed.
        self.seed = None
        self.seed_resolution = None

    def load(self, request: dict) -> dict:
        from ..devices import resolve_device
        from ..fields.shapespace import ShapeSpace
        from ..io.fieldfile import load

        start = time.perf_counter()
        path = request.get("path", "")
        device = resolve_device(request.get("device", "auto"))
        space = load(path, device=device)
        if not isinstance(space, ShapeSpace):
            raise ValueError(f"{path} is not a shape-space file")
        self.space = space
        self.lipschitz, self.seed, self.seed_resolution = None, None, None
        return {"shapes": len(self.space), "names": list(self.space.names), "device": device,
                "seconds": time.perf_counter() - start}

    def blend(self, request: dict, refine: bool = False) -> dict:
        """Extract the requested blend and write it; `refine` classifies the grid in full and
        returns None if that finds the same surface as the seeded extraction did."""
        from ..fields.shapespace import select_field
        from ..io.meshio import MeshAppearance, save_mesh
        from ..surface.extraction import EmptySurfaceError, ExtractionReport, extract_isosurface

        if self.space is None:
            raise ValueError("no shape space is loaded")
        start = time.perf_counter()
        weights = {int(index): float(weight) for index, weight in request["weights"].items()}
        field = select_field(self.space, blend=weights, slerp=bool(request.get("slerp", False)))
        resolution, level = int(request.get("resolution", PREVIEW_RESOLUTION)), float(request.get("level", 0.0))
        tile = PREVIEW_TILE.get(field.device.type)
        seeded = not refine and self.seed is not None and self.seed_resolution == resolution
        report = ExtractionReport("adaptive", resolution, level)
        try:
            surface = extract_isosurface(field, resolution, level, tile=tile, lipschitz=self.lipschitz,
                                         report=report, seed=self.seed if seeded else None)
        except EmptySurfaceError:
            if not seeded:
                raise
            seeded, report = False, ExtractionReport("adaptive", resolution, level)  # the surface left the seed
            surface = extract_isosurface(field, resolution, level, tile=tile, lipschitz=self.lipschitz,
                                         report=report)
        if field.kind == "sdf" and self.lipschitz is None:
            self.lipschitz = report.lipschitz
        unchanged = refine and self.seed is not None and bool((report.surface_tiles == self.seed).all())
        self.seed, self.seed_resolution = report.surface_tiles, resolution
        if unchanged:
            return None
        # A refinement gets its own file: the client may still be reading the first answer's.
        out = request["out"][: -len(".npz")] + "_refined.npz" if refine else request["out"]
        # A space with colour previews its blend's colours as well.
        appearance = MeshAppearance(colors=field.colors(surface.vertices)) if field.has_color else None
        save_mesh(out, surface, appearance=appearance)
        return {"path": out, "vertices": len(surface.vertices), "faces": len(surface.faces),
                "seeded": seeded, "seconds": time.perf_counter() - start}


def main() -> int:
    channel = Channel()
    exit_with_parent()
    stdin = sys.stdin
    sys.stdin = open(os.devnull)  # nothing else may read the request stream
    requests: queue.Queue = queue.Queue()
    threading.Thread(target=_read_requests, args=(stdin, requests), daemon=True).start()
    server = PreviewServer()
    handlers = {"load": ("loaded", server.load), "blend": ("mesh", server.blend)}
    pending: collections.deque = collections.deque()
    to_refine = None  # the last blend, if it was answered from a seed
    while True:
        try:
            request = _next_request(requests, pending, timeout=REFINE_AFTER if to_refine else None)
        except queue.Empty:  # the slider rests: check the last seeded blend
            request, to_refine = to_refine, None
            _answer(channel, "mesh", lambda r: server.blend(r, refine=True), request, refined=True)
            continue
        kind = request.get("type")
        if kind == "quit":
            return 0
        if kind not in handlers:
            channel.send("error", id=request.get("id"), message=f"unknown request {kind!r}")
            continue
        reply, handler = handlers[kind]
        answer = _answer(channel, reply, handler, request)
        to_refine = request if kind == "blend" and answer and answer.get("seeded") else None


def _answer(channel, reply: str, handler, request: dict, **extra):
    """Send the handler's answer to the request (nothing if it returns None) or its failure."""
    try:
        answer = handler(request)
    except Exception as error:  # noqa: BLE001 - every failure becomes a message; the server stays up
        traceback.print_exc()
        expected = isinstance(error, (ValueError, KeyError, FileNotFoundError, RuntimeError))
        channel.send("error", id=request.get("id"),
                     message=str(error) if expected else f"{type(error).__name__}: {error}")
        return None
    if answer is not None:
        channel.send(reply, id=request.get("id"), **answer, **extra)
    return answer


if __name__ == "__main__":
    sys.exit(main())
