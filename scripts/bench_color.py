"""Colour fitted with the shape (issue 19's targets): time and fidelity of coloured fits against the
same fit without colour, on a textured asset.

    python scripts/bench_color.py [--device cuda] [--mesh PATH] [--variants default,grid19,...]
        [--resolution 256] [--texture 2048] [--charts projection,xatlas] [--json out.json]

For each variant it fits the shape (the 'auto' preset of the device) with and without colour,
then reports: ground truth and training seconds (their sum is the work, as in bench_fit.py), the
shape's Chamfer-L1 / normal consistency / F-score at --resolution, and colour PSNR in sRGB of the
field at points on the source (field), of the extracted mesh's vertex colours (vertex: the
least-squares fit over each face, as extraction writes them; vertex_point_psnr in the JSON: the
field at the vertices alone) and of a
baked --texture texture (texture; 0 skips it), each against the source's own colour there; with
--charts projection,xatlas the default variant's texture is also laid out with xatlas's own charts
(its unwrap seconds and PSNR are in the printed rows and the JSON).
Variants change the colour network (a hash grid of 2^17..2^19 entries per level, the share of
colour points per step). The table is printed last.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from benchlib import shared_mesh
from neural_field_addon.core.appearance.surface_colors import SurfaceColors
from neural_field_addon.core.config import color_config, preset_configs, with_overrides
from neural_field_addon.core.devices import describe_device, resolve_device
from neural_field_addon.core.fitting.fitter import FieldFitter
from neural_field_addon.core.io.meshio import load_colored_mesh
from neural_field_addon.core.surface.baking import bake_texture, unwrap, vertex_colors
from neural_field_addon.core.surface.extraction import extract_isosurface
from neural_field_addon.core.surface.metrics import compare_colors, compare_meshes

SAMPLES = 100_000


def variants(field_config) -> dict:
    """name -> (colour network config or None for no colour, colour batch fraction)."""
    base = color_config(field_config)
    out = {"shape-only": (None, None), "default": (base, None)}
    if base.encoding == "hashgrid":
        for log2 in (16, 17, 18, 19):
            for fraction, share in ((1 / 16, "sixteenth"), (1 / 8, "eighth"), (1 / 4, "quarter"), (1 / 2, "half")):
                out[f"grid{log2}-{share}"] = (replace(base, hash_log2_size=log2), fraction)
        out["grid17-eighth-width32"] = (replace(base, hash_log2_size=17, width=32), 1 / 8)
    else:
        for sigma in (2.0, 4.0, 8.0):
            out[f"sigma{sigma:g}"] = (replace(base, fourier_sigma=sigma), None)
    return out


def run(mesh, colors, field_config, train_config, color_net, fraction, resolution, texture_size, device,
        charts=("projection",)):
    train = train_config if fraction is None else replace(train_config, color_batch_fraction=fraction)
    fitter = FieldFitter(mesh, field_config, train, colors=colors if color_net is not None else None,
                         color_network_config=color_net)
    if device == "cuda":
        torch.cuda.synchronize()
    field = fitter.run()
    row = {"groundtruth_s": fitter.timings["groundtruth_seconds"], "train_s": fitter.timings["train_seconds"]}
    row["work_s"] = row["groundtruth_s"] + row["train_s"]
    start = time.perf_counter()
    surface = extract_isosurface(field, resolution)
    row["extract_s"] = time.perf_counter() - start
    shape = compare_meshes(mesh, surface, samples=SAMPLES)
    row.update(chamfer=shape["chamfer_l1"], nc=shape["normal_consistency"], fscore=shape["fscore"])
    if color_net is None:
        return row
    row["color_parameters"] = field.report["color_parameters"]
    start = time.perf_counter()
    vertex = SurfaceColors.from_vertex_colors(surface.faces, vertex_colors(field.colors, surface, field.device))
    row["vertex_colors_s"] = time.perf_counter() - start
    fidelity = compare_colors(mesh, colors, surface, vertex, field.colors, samples=SAMPLES)
    row.update(field_psnr=fidelity["field_color_psnr"], vertex_psnr=fidelity["color_psnr"])
    # The colour field at the vertices alone, for comparison.
    at_vertices = SurfaceColors.from_vertex_colors(surface.faces, field.colors(surface.vertices))
    row["vertex_point_psnr"] = compare_colors(mesh, colors, surface, at_vertices, samples=SAMPLES)["color_psnr"]
    row["triangles"] = len(surface.faces)
    for index, method in enumerate(charts if texture_size else ()):
        suffix = "" if index == 0 else f"_{method}"
        start = time.perf_counter()
        split, uvs, _ = unwrap(surface, texture_size, charts=method)
        row["unwrap_s" + suffix] = time.perf_counter() - start
        start = time.perf_counter()
        texture = bake_texture(field.colors, split, uvs, texture_size, device=field.device)
        row["bake_s" + suffix] = time.perf_counter() - start
        baked = SurfaceColors(np.ones((len(split.faces), 3, 3)), uvs[split.faces], np.zeros(len(split.faces)),
                              (texture,))
        row["texture_psnr" + suffix] = compare_colors(mesh, colors, split, baked, samples=SAMPLES)["color_psnr"]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--mesh", default=shared_mesh("spot_textured.obj"))
    parser.add_argument("--variants", default="", help="more variants beside shape-only and default, e.g. "
                        "grid17-eighth,grid16-sixteenth (hash grids: grid<log2>-<sixteenth|eighth|quarter|half>; "
                        "Fourier features: sigma<2|4|8>)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the preset's)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--texture", type=int, default=2048)
    parser.add_argument("--charts", default="projection", help="UV charts of the baked texture, compared in "
                        "order: projection, xatlas or both (projection,xatlas); the first is the table's")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    source = load_colored_mesh(args.mesh)
    if source.colors is None:
        parser.error(f"{args.mesh} has no colours")
    field_config, train_config = preset_configs("auto", device)
    train_config = with_overrides(train_config, {"device": device, "steps": args.steps})
    table = variants(field_config)
    names = ["shape-only", "default", *(args.variants.split(",") if args.variants else [])]
    # One untimed fit first: kernels compiled and caches warm before anything is timed.
    run(source.mesh, source.colors, field_config, replace(train_config, steps=50), table["default"][0], None, 64, 0,
        device)
    rows = {}
    for name in names:
        color_net, fraction = table[name]
        texture = args.texture if name == "default" else 0
        rows[name] = run(source.mesh, source.colors, field_config, train_config, color_net, fraction,
                         args.resolution, texture, device, args.charts.split(","))
        print(name, json.dumps(rows[name]), flush=True)
    base = rows["shape-only"]["work_s"]
    print(f"\n{args.mesh} on {describe_device(device)}, {train_config.steps} steps, extraction at {args.resolution}")
    print("| variant | work s (x shape only) | Chamfer | NC | F | field PSNR | vertex PSNR | texture PSNR |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        def dB(key):
            return f"{row[key]:.2f}" if key in row else "-"

        print(f"| {name} | {row['work_s']:.2f} ({row['work_s'] / base:.2f}x) | {row['chamfer']:.3e} | "
              f"{row['nc']:.4f} | {row['fscore']:.4f} | {dB('field_psnr')} | {dB('vertex_psnr')} | "
              f"{dB('texture_psnr')} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"mesh": args.mesh, "device": describe_device(device), "steps": train_config.steps,
                       "rows": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
