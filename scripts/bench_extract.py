"""Isosurface extraction speed and memory: the adaptive narrow band at several resolutions and
the dense reference, on one trained field.

    python scripts/bench_extract.py [--field F.nfield | --mesh MESH [--preset fast] [--save-field F.nfield]]
        [--device auto] [--resolutions 256,512,1024,2048] [--dense 256] [--repeats 3]
        [--docs docs/BENCHMARKS.md | --docs '']

Without --field, the mesh (the Stanford bunny from ../shared/meshes by default) is fitted with
--preset on the device first. After a warm-up extraction (kernel compilation, the marching-cubes
process pool), each resolution is extracted --repeats times; the table gives the median
end-to-end time (field evaluation, marching cubes, welding, the mesh in object coordinates on
the host), its phases, the samples evaluated as a share of the dense grid, and the peak memory
above the start: GPU (torch's allocator) and host (this process plus the marching-cubes
workers, sampled every 5 ms). At the --dense resolutions the dense path runs too and the two
meshes are compared. The table is printed and replaces the device's bench_extract section of --docs.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing
import os
import statistics
import sys
import threading
import time

import numpy as np
import torch

from bench_docs import replace_section
from benchlib import ROOT, shared_mesh
from neural_field_addon.core.config import build_configs
from neural_field_addon.core.devices import describe_device, resolve_device
from neural_field_addon.core.fitting.fitter import fit_field
from neural_field_addon.core.io.fieldfile import load_field, save_field
from neural_field_addon.core.io.meshio import load_mesh
from neural_field_addon.core.surface.extraction import ExtractionReport, extract_isosurface


def markers(device: str) -> tuple[str, str]:
    """One section per device kind, so a CPU run does not replace the GPU's table."""
    return f"<!-- bench_extract:{device}:start -->", f"<!-- bench_extract:{device}:end -->"
PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


class HostMemory:
    """Peak resident memory of this process and its children, sampled in a thread."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()

    def _total(self) -> int:
        return _rss() + sum(_rss(child.pid) for child in multiprocessing.active_children())

    def __enter__(self):
        self.base = self._total()
        self.peak = self.base
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._total())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._total())

    @property
    def increase(self) -> int:
        return self.peak - self.base


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def extract_once(field, resolution: int, method: str, device: str):
    report = ExtractionReport(method, resolution, 0.0)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with HostMemory() as host:
        start = time.perf_counter()
        mesh = extract_isosurface(field, resolution, method=method, report=report)
        _sync(device)
        seconds = time.perf_counter() - start
    gpu = torch.cuda.max_memory_allocated() - base if device == "cuda" else 0
    return mesh, {"seconds": seconds, "report": report, "host": host.increase, "gpu": gpu,
                  "vertices": len(mesh.vertices), "faces": len(mesh.faces)}


def bad_edges(faces: np.ndarray, device: str) -> int:
    """Edges not shared by exactly two faces (0 for a closed manifold surface)."""
    faces = torch.from_numpy(faces).to(device)
    edges = torch.sort(torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), dim=1).values
    _, counts = torch.unique(edges[:, 0] * (int(faces.max()) + 1) + edges[:, 1], return_counts=True)
    return int((counts != 2).sum())


def bench(field, resolution: int, method: str, device: str, repeats: int):
    runs = []
    for _ in range(repeats):
        mesh, run = extract_once(field, resolution, method, device)
        runs.append(run)
        print(f"  {method} {resolution}: {run['seconds']:.3f} s", flush=True)
    median = statistics.median(r["seconds"] for r in runs)
    chosen = min(runs, key=lambda r: abs(r["seconds"] - median))
    chosen["host"] = max(r["host"] for r in runs)
    chosen["gpu"] = max(r["gpu"] for r in runs)
    chosen["bad_edges"] = bad_edges(mesh.faces, device)
    return mesh, chosen


def compare(adaptive, dense) -> float:
    from scipy.spatial import cKDTree

    gap = max(cKDTree(dense.vertices).query(adaptive.vertices)[0].max(),
              cKDTree(adaptive.vertices).query(dense.vertices)[0].max())
    return gap / dense.diagonal


def markdown(rows, agreement, args, device, field_note) -> str:
    today = datetime.date.today().isoformat()
    start, end = markers(device)
    lines = [
        start,
        f"### Extraction ({describe_device(device)}, {today})",
        "",
        f"`python scripts/bench_extract.py {' '.join(sys.argv[1:])}`. {field_note} Median of "
        f"{args.repeats} runs after a warm-up; memory is the peak above the start.",
        "",
        "| method | resolution | samples | evaluated | faces | edges not in 2 faces | total | classify | evaluate | march | weld | GPU memory | host memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, resolution, run in rows:
        report = run["report"]
        dense = int(np.prod(report.samples))
        phases = report.seconds
        cell = lambda name: f"{phases[name]:.3f}" if name in phases else "-"  # noqa: E731
        lines.append(
            f"| {method} | {resolution} | {'x'.join(map(str, report.samples))} | "
            f"{report.evaluated / 1e6:.1f} M ({100 * report.evaluated / dense:.1f}%) | {run['faces']:,} | "
            f"{run['bad_edges']} | "
            f"**{run['seconds']:.3f} s** | {cell('classify')} | {cell('evaluate')} | {cell('march')} | "
            f"{cell('weld')} | {run['gpu'] / 2**30:.2f} GB | {run['host'] / 2**30:.2f} GB |"
        )
    for resolution, (same, gap) in agreement.items():
        lines.append("")
        lines.append(f"At {resolution}, adaptive and dense give {'the same' if same else 'DIFFERENT'} vertex and "
                     f"face counts; the largest vertex distance between them is {gap:.1e} of the diagonal.")
    lines.append(end)
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--field", help="a trained field file (.nfield)")
    parser.add_argument("--mesh", default=shared_mesh("stanford-bunny.obj"))
    parser.add_argument("--preset", default="fast", help="preset to fit the mesh with when no --field is given")
    parser.add_argument("--save-field", help="where to keep the fitted field")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--resolutions", default="")
    parser.add_argument("--dense", default="256", help="resolutions at which the dense path runs too ('' for none)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--docs", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"),
                        help="markdown file whose bench_extract section is replaced ('' to write none)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    resolutions = [int(r) for r in (args.resolutions or ("256,512,1024,2048" if device == "cuda" else "128,256,512")).split(",")]

    if args.field:
        field = load_field(args.field, device=device)
        note = f"Field: {os.path.basename(args.field)} ({field.config.encoding}, {field.report.get('steps', '?')} steps)."
    else:
        mesh = load_mesh(args.mesh)
        field_config, train_config = build_configs(args.preset, device, {}, {})
        start = time.perf_counter()
        field = fit_field(mesh, field_config, train_config)
        print(f"fitted {os.path.basename(args.mesh)} ({args.preset}) in {time.perf_counter() - start:.1f} s", flush=True)
        note = f"Field: {os.path.basename(args.mesh)} fitted here with the {args.preset} preset ({field_config.encoding})."
        if args.save_field:
            save_field(args.save_field, field)

    start = time.perf_counter()
    extract_isosurface(field, 128)
    extract_isosurface(field, resolutions[-1] // 2 if device == "cuda" else 128)  # fills the worker pool
    print(f"warm-up: {time.perf_counter() - start:.1f} s", flush=True)

    rows, agreement = [], {}
    dense_at = {int(r) for r in args.dense.split(",") if r}
    for resolution in resolutions:
        adaptive, run = bench(field, resolution, "adaptive", device, args.repeats)
        rows.append(("adaptive", resolution, run))
        if resolution in dense_at:
            dense, run = bench(field, resolution, "dense", device, 1)
            rows.append(("dense", resolution, run))
            agreement[resolution] = (
                (len(adaptive.vertices), len(adaptive.faces)) == (len(dense.vertices), len(dense.faces)),
                compare(adaptive, dense),
            )
    section = markdown(rows, agreement, args, device, note)
    print(section)
    if args.docs:
        replace_section(args.docs, *markers(device), section, "## Extraction benchmark (`scripts/bench_extract.py`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
