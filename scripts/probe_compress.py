"""The exploration that chose compress's student (issue 21): each mesh compressed at 6.5, 15 and
40 KB at 8 bits by the two student families (SIREN, the default; a softplus Fourier MLP), and the
Fast preset's bunny field with its smallest table entries pruned before int8 + LZMA.

    python scripts/probe_compress.py [--meshes .gpu]

Run on the GPU machine with the meshes copied into a git-ignored folder of the checkout (../shared
does not travel there); rows go to stdout and $OUT/probe3.jsonl as JSON lines."""

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
    with open(os.path.join(OUT, "probe3.jsonl"), "a") as handle:
        handle.write(json.dumps(row) + "\n")


def measure(mesh, field) -> dict:
    metrics = compare_meshes(mesh, extract_isosurface(field, 256), samples=100_000)
    return dict(chamfer=metrics["chamfer_l1"], nc=metrics["normal_consistency"], f=metrics["fscore"])


def pruned_fast_fields(folder: str) -> None:
    mesh = load_mesh(os.path.join(folder, "stanford-bunny.obj"))
    field_config, train_config = preset_configs("fast", "cuda")
    train_config = with_overrides(train_config, {"device": "cuda"})
    for log2 in (19, 17):
        field = FieldFitter(mesh, replace(field_config, hash_log2_size=log2).validate(), train_config,
                            resolution=256).run()
        table = field.network.encoding.table
        original = table.detach().clone()
        offsets = [0]
        for _, entries, _, _ in field.network.encoding.layout:
            offsets.append(offsets[-1] + entries)
        for share in (0.5, 0.75, 0.9):
            with torch.no_grad():
                table.copy_(original)
                for first, last in zip(offsets[:-1], offsets[1:]):
                    level = table[first:last]
                    level[level.abs() < torch.quantile(level.abs().flatten()[: 1 << 24].float(), share)] = 0
            save_field("/tmp/pruned.nfield", field, "int8", "lzma")
            log(dict(mesh="bunny-fast-pruned", log2=log2, pruned=share, bytes=os.path.getsize("/tmp/pruned.nfield"),
                     **measure(mesh, load_field("/tmp/pruned.nfield", device="cuda"))))


def students(folder: str) -> None:
    for name in ("stanford-bunny", "spot", "fandisk", "teapot"):
        mesh = load_mesh(os.path.join(folder, f"{name}.obj"))
        for family in compression.FAMILIES:
            for budget in (6500, 15000, 40000):
                start = time.perf_counter()
                result = compression.compress(mesh, target_bytes=budget, bits=8, device="cuda", family=family)
                log(dict(mesh=name, family=family, budget=budget, bits=8, bytes=len(result.content),
                         width=result.field.config.width, depth=result.field.config.depth,
                         seconds=time.perf_counter() - start, **measure(mesh, result.field)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meshes", default=".gpu")
    args = parser.parse_args()
    pruned_fast_fields(args.meshes)
    students(args.meshes)
