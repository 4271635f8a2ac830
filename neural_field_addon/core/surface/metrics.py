"""Surface fidelity between a reference mesh and a candidate mesh.

- Chamfer-L1 (point-to-surface): mean exact distance from samples of each surface to the other
  surface's triangles, averaged over both directions, divided by the reference's bounding-box
  diagonal. Point-to-surface, not point-to-point, so it does not depend on sample density.
- Normal consistency: mean |n_sample . n_closest face| over both directions (orientation-free,
  since open reference meshes have no consistent outside).
- F-score at a distance threshold tau (default 1% of the diagonal): harmonic mean of precision
  (candidate samples within tau of the reference) and recall (the converse).
"""

from __future__ import annotations

import numpy as np

from ..geometry import MeshQuery, TriangleMesh, sample_surface


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
