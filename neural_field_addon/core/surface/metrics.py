"""Surface fidelity between a reference mesh and a candidate mesh.

- Chamfer-L1 (point-to-surface): mean exact distance from samples of each surface to the other
  surface's triangles, averaged over both directions, divided by the reference's bounding-box
  diagonal. Point-to-surface, not point-to-point, so it does not depend on sample density.
- Normal consistency: mean |n_sample . n_closest face| over both directions (orientation-free,
  since open reference meshes have no consistent outside).
- F-score at a distance threshold tau (default 1% of the diagonal): harmonic mean of precision
  (candidate samples within tau of the reference) and recall (the converse).
- Colour PSNR (`compare_colors`), in sRGB over RGB with peak 1: between the reference's colour at
  points sampled on the reference surface and the candidate's colour at the nearest points of
  the candidate mesh (its vertex colours interpolated, or its texture), and a field's own colour
  at the reference points.
"""

from __future__ import annotations

import numpy as np

from ..appearance.colorspace import linear_to_srgb
from ..appearance.surface_colors import SurfaceColors, barycentric_of
from ..geometry import MeshQuery, TriangleMesh, sample_surface, sample_surface_barycentric

# Colour samples on the reference surface.
COLOR_SAMPLES = 100_000


def _one_way(source: TriangleMesh, target_query: MeshQuery, count: int, rng):
    points, normals = sample_surface(source, count, rng)
    distance, _, face = target_query.closest_points(points)
    _, target_normals = target_query.mesh.face_areas_and_normals()
    alignment = np.abs(np.sum(normals * target_normals[face], axis=1))
    return distance, alignment


def compare_meshes(
    reference: TriangleMesh,
    candidate: TriangleMesh,
    samples: int = 50_000,
    fscore_fraction: float = 0.01,
    seed: int = 0,
) -> dict:
    """Fidelity figures of `candidate` against `reference` (both in the same coordinates)."""
    rng = np.random.default_rng(seed)
    diagonal = reference.diagonal
    to_candidate, align_rc = _one_way(reference, MeshQuery(candidate), samples, rng)
    to_reference, align_cr = _one_way(candidate, MeshQuery(reference), samples, rng)
    tau = fscore_fraction * diagonal
    recall = float(np.mean(to_candidate <= tau))
    precision = float(np.mean(to_reference <= tau))
    fscore = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {
        "chamfer_l1": float(0.5 * (to_candidate.mean() + to_reference.mean()) / diagonal),
        "chamfer_reference_to_candidate": float(to_candidate.mean() / diagonal),
        "chamfer_candidate_to_reference": float(to_reference.mean() / diagonal),
        "hausdorff": float(max(to_candidate.max(), to_reference.max()) / diagonal),
        "normal_consistency": float(0.5 * (align_rc.mean() + align_cr.mean())),
        "fscore": fscore,
        "fscore_threshold": fscore_fraction,
        "precision": precision,
        "recall": recall,
        "diagonal": diagonal,
        "samples": samples,
    }


def psnr(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two arrays of values in [0, 1] (peak 1)."""
    mse = float(np.mean((np.asarray(reference, dtype=np.float64) - np.asarray(candidate, dtype=np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(1.0 / mse))


def compare_colors(reference: TriangleMesh, reference_colors: SurfaceColors, candidate: TriangleMesh | None = None,
                   candidate_colors: SurfaceColors | None = None, field_colors=None, samples: int = COLOR_SAMPLES,
                   seed: int = 0) -> dict:
    """Colour fidelity in sRGB: `color_psnr` of the candidate mesh's colours (at the nearest point
    of the candidate to each reference sample) and `field_color_psnr` of `field_colors(points
    (q, 3)) -> linear RGB (q, 3)` at the samples themselves, whichever is given."""
    import torch

    points, _, face, weights = sample_surface_barycentric(reference, samples, np.random.default_rng(seed))
    truth = linear_to_srgb(reference_colors.colors_at(face, weights))
    result = {"color_samples": samples}
    if candidate is not None and candidate_colors is not None:
        _, closest, near_face = MeshQuery(candidate).closest_points(points)
        triangles = torch.as_tensor(candidate.triangles()[near_face])
        near_weights = barycentric_of(torch.as_tensor(closest), triangles).numpy()
        result["color_psnr"] = psnr(truth, linear_to_srgb(candidate_colors.colors_at(near_face, near_weights)))
    if field_colors is not None:
        result["field_color_psnr"] = psnr(truth, linear_to_srgb(field_colors(points)))
    return result
