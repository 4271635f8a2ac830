"""The exploration behind the storage defaults (issue 21): compress at several budgets, bits and
step counts (bunny, spot), and the Fast preset's bunny field per table size (2^19 to 2^15) at each
storage (float16, int8, int8 + LZMA, int6 + LZMA), with the time to read each file back; then a
15 KB student distilled from the 2^19 field, and how long its file takes to decode.

    python scripts/probe_storage.py [--meshes .gpu]

Run on the GPU machine, the meshes copied into a git-ignored folder of the checkout; rows go to
stdout and $OUT/probe2.jsonl as JSON lines."""

import argparse
import json
import os
import time
from dataclasses import replace

import torch

import benchlib  # noqa: F401 - the checkout's package on the path
import neural_field_addon.core.compression.compress as compression
from neural_field_addon.core.config import preset_configs, with_overrides
from neural_field_addon.core.fitting.fitter import FieldFitter
from neural_field_addon.core.io.fieldfile import load_field, save_field
from neural_field_addon.core.io.meshio import load_mesh
from neural_field_addon.core.surface.extraction import extract_isosurface
from neural_field_addon.core.surface.metrics import compare_meshes

OUT = os.environ.get("OUT", "/tmp")


def log(row: dict) -> None:
    print(json.dumps(row), flush=True)
    with open(os.path.join(OUT, "probe2.jsonl"), "a") as handle:
        handle.write(json.dumps(row) + "\n")


def measure(mesh, field) -> dict:
    metrics = compare_meshes(mesh, extract_isosurface(field, 256), samples=100_000)
    return dict(chamfer=metrics["chamfer_l1"], nc=metrics["normal_consistency"], f=metrics["fscore"])


def budgets_and_bits(folder: str) -> None:
    for name in ("stanford-bunny", "spot"):
        mesh = load_mesh(os.path.join(folder, f"{name}.obj"))
        runs = [(b, 6, 16000) for b in (4000, 6500, 10000, 15000, 22000)]
        runs += [(6500, 5, 16000), (15000, 5, 16000), (15000, 8, 16000), (15000, 6, 32000)]
        for budget, bits, steps in runs:
            start = time.perf_counter()
            result = compression.compress(mesh, target_bytes=budget, bits=bits, device="cuda", steps=steps)
            log(dict(mesh=name, budget=budget, bits=bits, steps=steps, bytes=len(result.content),
                     width=result.field.config.width, depth=result.field.config.depth,
                     seconds=time.perf_counter() - start, **measure(mesh, result.field)))


def fast_tables(folder: str) -> None:
    mesh = load_mesh(os.path.join(folder, "stanford-bunny.obj"))
    field_config, train_config = preset_configs("fast", "cuda")
    train_config = with_overrides(train_config, {"device": "cuda"})
    for log2 in (19, 17, 16, 15):
        fitter = FieldFitter(mesh, replace(field_config, hash_log2_size=log2).validate(), train_config,
                             resolution=256)
        field = fitter.run()
        for precision, codec in (("float16", None), ("int8", None), ("int8", "lzma"), ("int6", "lzma")):
            save_field("/tmp/fast.nfield", field, precision, codec)
            start = time.perf_counter()
            back = load_field("/tmp/fast.nfield", device="cuda")
            log(dict(mesh="bunny-fast", log2=log2, levels=16, precision=precision, codec=codec,
                     bytes=os.path.getsize("/tmp/fast.nfield"), train_s=fitter.timings["train_seconds"],
                     load_s=time.perf_counter() - start, **measure(mesh, back)))
        if log2 == 19:
            start = time.perf_counter()
            result = compression.compress(field, target_bytes=15000, device="cuda")
            log(dict(mesh="bunny-distilled", budget=15000, bytes=len(result.content),
                     seconds=time.perf_counter() - start, report_chamfer=result.report["chamfer_l1"],
                     **measure(mesh, result.field)))
            with open("/tmp/small.nfield", "wb") as handle:
                handle.write(result.content)
            start = time.perf_counter()
            load_field("/tmp/small.nfield", device="cuda")
            torch.cuda.synchronize()
            log(dict(mesh="decode", load_s=time.perf_counter() - start))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meshes", default=".gpu")
    args = parser.parse_args()
    budgets_and_bits(args.meshes)
    fast_tables(args.meshes)
