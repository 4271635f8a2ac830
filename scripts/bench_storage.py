"""Bytes against fidelity (issue 21): Blender's own ways of storing a mesh small beside our fields.

    python scripts/bench_storage.py [--meshes ../shared/meshes] [--names stanford-bunny,spot,fandisk,teapot]
        [--ratios 0.5,0.2,0.1,0.05,0.02,0.01] [--vdb-voxels 0.016,0.008,0.004] [--fields DIR]
        [--fit-tables 19,17,15] [--compress 3600,6500,15000,40000] [--bits 10,8] [--device auto]
        [--no-baselines] [--resolution 256] [--json out.json] [--plot out.png] [--merge a.json,b.json]

Baselines, through the bpy module: Decimate (Collapse) at each ratio, then saved as binary PLY, as
that PLY compressed with xz (LZMA, preset 9), and as a Draco GLB (Blender's glTF exporter, 14-bit
positions); each file is read back (the GLB through Blender's importer, so Draco's quantisation
counts) and measured against the source. Blender's Mesh to SDF Grid: the same OpenVDB call its node
makes (MeshToVolume, through the `openvdb` module bpy bundles), a level set of band 1 at voxel
sizes `--vdb-voxels` (shares of the diagonal), written as .vdb (OpenVDB's own compression,
values in half precision) and meshed back at level 0 (its convertToPolygons); all
measured: point-to-surface Chamfer-L1 relative to the diagonal,
normal consistency, F-score@1%. Fields: every `DIR/<name>.nfield`, and with `--fit-tables` a fit of
each mesh (the auto preset on `--device`) per hash-table size (log2 entries a level), is written
again at each storage precision (float32, float16, int8 + LZMA), extracted at `--resolution` and
measured the same way, with the fit's training time. `--compress`: each mesh compressed
(compression/compress.py, fitted directly from the mesh) at each byte budget, measured the same way.
Without bpy (the GPU machine) the baselines are skipped. `--plot`: bytes against Chamfer-L1 and
normal consistency, one column per mesh, of these rows and of the `--merge` JSON files' (a GPU run's
fields beside this machine's baselines; needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import tempfile
import time

import numpy as np

import benchlib  # noqa: F401 - the checkout's package on the path
from neural_field_addon.core.config import COMPRESS_DEFAULT_BITS
from neural_field_addon.core.geometry import TriangleMesh
from neural_field_addon.core.io.meshio import load_mesh
from neural_field_addon.core.surface.metrics import compare_meshes

SAMPLES = 100_000
DRACO_POSITION_BITS = 14


def _bpy():
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy


def _object(bpy, mesh: TriangleMesh, name: str):
    data = bpy.data.meshes.new(name)
    data.from_pydata(mesh.vertices.tolist(), [], mesh.faces.tolist())
    data.update()
    obj = bpy.data.objects.new(name, data)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def _triangles(obj) -> TriangleMesh:
    data = obj.data
    data.calc_loop_triangles()
    vertices = np.array([obj.matrix_world @ v.co for v in data.vertices], dtype=np.float64)
    faces = np.array([t.vertices[:] for t in data.loop_triangles], dtype=np.int64)
    return TriangleMesh(vertices, faces)


def decimated(bpy, mesh: TriangleMesh, ratio: float):
    """The source decimated by Blender's Collapse at `ratio`, as a fresh object."""
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    obj = _object(bpy, mesh, "source")
    modifier = obj.modifiers.new("decimate", "DECIMATE")
    modifier.decimate_type, modifier.ratio = "COLLAPSE", ratio
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)
    bpy.ops.object.modifier_apply(modifier=modifier.name)
    return obj


def baseline_rows(bpy, mesh: TriangleMesh, ratios, folder: str) -> list:
    rows = []
    for ratio in ratios:
        obj = decimated(bpy, mesh, ratio)
        kept = _triangles(obj)
        ply = os.path.join(folder, f"decimated_{ratio}.ply")
        bpy.ops.wm.ply_export(filepath=ply, export_selected_objects=True, ascii_format=False,
                              export_normals=False, export_uv=False, export_colors="NONE")
        with open(ply, "rb") as handle:
            xz = len(lzma.compress(handle.read(), preset=9))
        glb = os.path.join(folder, f"decimated_{ratio}.glb")
        bpy.ops.export_scene.gltf(filepath=glb, export_format="GLB", use_selection=True,
                                  export_draco_mesh_compression_enable=True,
                                  export_draco_position_quantization=DRACO_POSITION_BITS,
                                  export_normals=False, export_materials="NONE")
        for other in list(bpy.data.objects):
            bpy.data.objects.remove(other)
        bpy.ops.import_scene.gltf(filepath=glb)
        draco = _triangles(next(o for o in bpy.data.objects if o.type == "MESH"))
        plain = compare_meshes(mesh, kept, samples=SAMPLES)
        coded = compare_meshes(mesh, draco, samples=SAMPLES)
        for kind, size, metrics in (("Decimate + PLY", os.path.getsize(ply), plain),
                                    ("Decimate + PLY.xz", xz, plain),
                                    ("Decimate + Draco GLB", os.path.getsize(glb), coded)):
            rows.append({"method": kind, "ratio": ratio, "bytes": size, "faces": len(kept.faces),
                         "chamfer": metrics["chamfer_l1"], "normal_consistency": metrics["normal_consistency"],
                         "fscore": metrics["fscore"]})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def vdb_rows(mesh: TriangleMesh, voxel_fractions, folder: str) -> list:
    """Mesh to SDF Grid's level sets as .vdb files, read back and meshed at level 0."""
    import bpy

    bpy.utils.expose_bundled_modules()
    import openvdb

    rows = []
    points = mesh.vertices.astype(np.float32)
    triangles = mesh.faces.astype(np.uint32)
    for fraction in voxel_fractions:
        voxel = fraction * mesh.diagonal
        grid = openvdb.FloatGrid.createLevelSetFromPolygons(points, triangles=triangles,
                                                            transform=openvdb.createLinearTransform(voxel),
                                                            halfWidth=1.0)
        grid.name = "sdf"
        grid.saveFloatAsHalf = True
        path = os.path.join(folder, f"sdf_{fraction}.vdb")
        openvdb.write(path, grids=[grid])
        back = openvdb.read(path, "sdf")
        vertices, tris, quads = back.convertToPolygons(isovalue=0.0)
        faces = np.concatenate([np.asarray(tris, dtype=np.int64).reshape(-1, 3),
                                np.asarray(quads, dtype=np.int64).reshape(-1, 4)[:, [0, 1, 2]],
                                np.asarray(quads, dtype=np.int64).reshape(-1, 4)[:, [0, 2, 3]]])
        surface = TriangleMesh(np.asarray(vertices, dtype=np.float64), faces)
        metrics = compare_meshes(mesh, surface, samples=SAMPLES)
        rows.append({"method": "Mesh to SDF Grid .vdb", "ratio": f"voxel {fraction:g} diag", "bytes": os.path.getsize(path),
                     "faces": len(faces), "chamfer": metrics["chamfer_l1"],
                     "normal_consistency": metrics["normal_consistency"], "fscore": metrics["fscore"]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def fitted_fields(mesh: TriangleMesh, tables, device: str, resolution: int):
    """(label, field, train seconds) of a fit per hash-table size, the auto preset on `device`."""
    from dataclasses import replace

    from neural_field_addon.core.config import preset_configs, with_overrides
    from neural_field_addon.core.devices import resolve_device
    from neural_field_addon.core.fitting.fitter import FieldFitter

    device = resolve_device(device)
    field_config, train_config = preset_configs("auto", device)
    for log2 in tables:
        config = replace(field_config, hash_log2_size=log2).validate() if field_config.encoding == "hashgrid" \
            else field_config
        fitter = FieldFitter(mesh, config, with_overrides(train_config, {"device": device}), resolution=resolution)
        field = fitter.run()
        yield f"table 2^{log2}", field, fitter.timings["train_seconds"]


def field_rows(mesh: TriangleMesh, field, label: str, resolution: int, folder: str, train_s=None) -> list:
    from neural_field_addon.core.io.fieldfile import load_field, save_field
    from neural_field_addon.core.surface.extraction import extract_isosurface

    rows = []
    for precision, codec in (("float32", None), ("float16", None), ("int8", "lzma")):
        out = os.path.join(folder, f"field_{precision}.nfield")
        save_field(out, field, precision, codec)
        start = time.perf_counter()
        surface = extract_isosurface(load_field(out, device=str(field.device)), resolution)
        metrics = compare_meshes(mesh, surface, samples=SAMPLES)
        rows.append({"method": f"field {label}, {precision}{' + LZMA' if codec else ''}", "bytes": os.path.getsize(out),
                     "train_s": train_s,
                     "chamfer": metrics["chamfer_l1"], "normal_consistency": metrics["normal_consistency"],
                     "fscore": metrics["fscore"], "extract_s": time.perf_counter() - start,
                     "encoding": field.config.encoding})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def compressed_rows(mesh: TriangleMesh, budgets, bits: int, device: str, resolution: int) -> list:
    from neural_field_addon.core.compression.compress import compress
    from neural_field_addon.core.io.fieldfile import load_content
    from neural_field_addon.core.surface.extraction import extract_isosurface

    rows = []
    for budget in budgets:
        start = time.perf_counter()
        result = compress(mesh, target_bytes=budget, bits=bits, device=device)
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        field = load_content(result.content, device=str(result.field.device))
        decode_s = time.perf_counter() - start
        metrics = compare_meshes(mesh, extract_isosurface(field, resolution), samples=SAMPLES)
        rows.append({"method": f"compressed field ({bits} bits)", "ratio": f"budget {budget:,}",
                     "bytes": len(result.content), "width": result.field.config.width,
                     "depth": result.field.config.depth, "compress_s": seconds, "decode_s": decode_s,
                     "chamfer": metrics["chamfer_l1"], "normal_consistency": metrics["normal_consistency"],
                     "fscore": metrics["fscore"]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


PLOT_STYLES = {"Decimate + Draco GLB": ("o-", "#d62728"), "Decimate + PLY.xz": ("s--", "#9467bd"),
               "Decimate + PLY": ("v:", "#8c564b"), "Mesh to SDF Grid .vdb": ("D-", "#7f7f7f")}


def plot(results: dict, path: str) -> None:
    """Bytes (log) against Chamfer-L1 (log) and normal consistency, a column per mesh."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    figure, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 7.5), squeeze=False)
    for column, name in enumerate(names):
        methods = {}
        for row in results[name]:
            method = row["method"]
            if method.startswith("field table"):
                method = "Fast field (" + method.split(", ", 1)[1] + ")"
            methods.setdefault(method, []).append(row)
        for method, rows in methods.items():
            rows = sorted(rows, key=lambda r: r["bytes"])
            style, colour = PLOT_STYLES.get(method, ("^-", None))
            if method.startswith("compressed"):  # the default bold, the variants tried beside it pale
                style, colour = ("*-", "#1f77b4") if method == f"compressed field ({COMPRESS_DEFAULT_BITS} bits)" else ("*--", None)
            for axis, key in ((axes[0][column], "chamfer"), (axes[1][column], "normal_consistency")):
                axis.plot([r["bytes"] for r in rows], [r[key] for r in rows], style, color=colour, label=method,
                          markersize=7 if method.startswith("compressed") else 5,
                          alpha=1.0 if colour is not None or not method.startswith("compressed") else 0.45)
        top, bottom = axes[0][column], axes[1][column]
        top.set_title(name)
        top.set_xscale("log"), top.set_yscale("log"), bottom.set_xscale("log")
        top.set_ylabel("Chamfer-L1 / diagonal"), bottom.set_ylabel("normal consistency")
        bottom.set_xlabel("bytes")
        top.axhline(2e-4, color="k", linewidth=0.6, linestyle=":"), top.axhline(5e-4, color="k", linewidth=0.6,
                                                                                 linestyle=":")
        bottom.set_ylim(0.9, 1.0)
        for axis in (top, bottom):
            axis.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meshes", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "meshes"))
    parser.add_argument("--names", default="stanford-bunny,spot,fandisk,teapot")
    parser.add_argument("--ratios", default="0.5,0.2,0.1,0.05,0.02,0.01")
    parser.add_argument("--fields", default=None, help="a folder of <name>.nfield fields of the same meshes")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--json", default=None)
    parser.add_argument("--fit-tables", default=None, help="fit each mesh per hash-table size (log2, comma-separated)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--compress", default=None, help="compress each mesh at these byte budgets (comma-separated)")
    parser.add_argument("--bits", default=str(COMPRESS_DEFAULT_BITS),
                        help="bits a weight of the compressed fields (comma-separated: one row set each)")
    parser.add_argument("--plot", default=None, help="write the rate-distortion plot (PNG) here")
    parser.add_argument("--merge", default=None, help="JSON files of earlier runs (comma-separated) to plot beside")
    parser.add_argument("--vdb-voxels", default="0.016,0.008,0.004",
                        help="Mesh to SDF Grid voxel sizes, shares of the diagonal ('' for none)")
    args = parser.parse_args()
    try:
        bpy = None if args.no_baselines else _bpy()
    except ImportError:
        bpy = None
        print("no bpy here: the Blender baselines are skipped", flush=True)
    ratios = [float(r) for r in args.ratios.split(",")]
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in filter(None, args.names.split(",")):
            mesh = load_mesh(os.path.join(args.meshes, f"{name}.obj"))
            print(f"{name}: {len(mesh.faces):,} triangles", flush=True)
            rows = baseline_rows(bpy, mesh, ratios, folder) if bpy is not None else []
            if bpy is not None and args.vdb_voxels:
                rows += vdb_rows(mesh, [float(v) for v in args.vdb_voxels.split(",")], folder)
            if args.fields and os.path.exists(os.path.join(args.fields, f"{name}.nfield")):
                from neural_field_addon.core.io.fieldfile import load_field

                field = load_field(os.path.join(args.fields, f"{name}.nfield"))
                rows += field_rows(mesh, field, "given", args.resolution, folder)
            if args.fit_tables:
                tables = [int(t) for t in args.fit_tables.split(",")]
                for label, field, train_s in fitted_fields(mesh, tables, args.device, args.resolution):
                    rows += field_rows(mesh, field, label, args.resolution, folder, train_s)
            if args.compress:
                from neural_field_addon.core.devices import resolve_device

                for bits in (int(b) for b in args.bits.split(",")):
                    rows += compressed_rows(mesh, [int(b) for b in args.compress.split(",")], bits,
                                            resolve_device(args.device), args.resolution)
            results[name] = rows
    for name, rows in results.items():
        print(f"\n{name}\n| method | ratio | bytes | Chamfer | normal consistency | F@1% |\n|---|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['method']} | {row.get('ratio', '-')} | {row['bytes']:,} | {row['chamfer']:.3e} | "
                  f"{row['normal_consistency']:.4f} | {row['fscore']:.4f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    if args.plot:
        merged = {name: list(rows) for name, rows in results.items()}
        for other in (args.merge or "").split(","):
            if other:
                with open(other) as handle:
                    for name, rows in json.load(handle).items():
                        merged.setdefault(name, []).extend(rows)
        plot(merged, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
