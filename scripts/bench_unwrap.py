"""Texture layouts compared: projection charts packed by xatlas against xatlas's own charts, on the
surfaces a coloured field extracts, by unwrap time and the baked texture's colour PSNR.

    python -m neural_field_addon.core fit ../shared/meshes/spot_textured.obj -o spot.nfield
    python scripts/bench_unwrap.py spot.nfield ../shared/meshes/spot_textured.obj \\
        [--resolutions 128,256] [--sizes 512,2048] [--charts projection,xatlas]

PSNR in sRGB against the source's own colours at 100,000 points on the source, as in
bench_color.py; the table is printed last.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import benchlib  # noqa: F401 - the checkout's package on the path
from neural_field_addon.core.appearance.surface_colors import SurfaceColors
from neural_field_addon.core.io.fieldfile import load_field
from neural_field_addon.core.io.meshio import load_colored_mesh
from neural_field_addon.core.surface.baking import bake_texture, unwrap
from neural_field_addon.core.surface.extraction import extract_isosurface
from neural_field_addon.core.surface.metrics import compare_colors

SAMPLES = 100_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("field", help="a field fitted with colour (.nfield)")
    parser.add_argument("mesh", help="its coloured source")
    parser.add_argument("--resolutions", default="128,256")
    parser.add_argument("--sizes", default="512,2048")
    parser.add_argument("--charts", default="projection,xatlas")
    args = parser.parse_args()
    field, source = load_field(args.field), load_colored_mesh(args.mesh)
    if not field.has_color or source.colors is None:
        parser.error("both the field and the mesh need colour")
    rows = []
    for resolution in map(int, args.resolutions.split(",")):
        surface = extract_isosurface(field, resolution)
        for size in map(int, args.sizes.split(",")):
            for charts in args.charts.split(","):
                start = time.perf_counter()
                split, uvs, _ = unwrap(surface, size, charts=charts)
                seconds = time.perf_counter() - start
                texture = bake_texture(field.colors, split, uvs, size, device=field.device)
                baked = SurfaceColors(np.ones((len(split.faces), 3, 3)), uvs[split.faces],
                                      np.zeros(len(split.faces)), (texture,))
                value = compare_colors(source.mesh, source.colors, split, baked, samples=SAMPLES)["color_psnr"]
                rows.append((resolution, len(surface.faces), size, charts, seconds, value))
                print(rows[-1], flush=True)
    print("| surface | triangles | texture | charts | unwrap s | texture PSNR |")
    print("|---|---|---|---|---|---|")
    for resolution, triangles, size, charts, seconds, value in rows:
        print(f"| {resolution}^3 | {triangles:,} | {size}^2 | {charts} | {seconds:.1f} | {value:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
