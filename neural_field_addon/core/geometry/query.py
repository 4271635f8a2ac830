"""Ground-truth queries on a triangle mesh: distance, winding number, signed distance, occupancy.

`MeshQuery` picks the fastest exact backend available:
- libigl when installed: its AABB tree for exact distance and its hierarchical fast winding
  number (Barill et al. 2018), on the CPU in float64 (libigl's float32 paths are unreliable,
  see FINDINGS.md). Even for a CUDA fit this beats the brute force below by orders of magnitude;
- otherwise: the brute-force PyTorch reference in `bruteforce`, on `device`.
Results are float64 numpy arrays in the mesh's own coordinates whichever backend ran.
"""

from __future__ import annotations

import numpy as np

from .mesh import TriangleMesh

INSIDE_WINDING = 0.5


def _libigl():
    try:
        import igl  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return igl


class MeshQuery:
    """Exact queries against one mesh. `backend` is 'auto', 'libigl' or 'torch'."""

    def __init__(self, mesh: TriangleMesh, device: str = "cpu", backend: str = "auto"):
        self.mesh = mesh
        self.device = str(device)
        igl = _libigl()
        if backend == "auto":
            backend = "libigl" if igl is not None else "torch"
        if backend == "libigl" and igl is None:
            raise ValueError("backend 'libigl' requested but the libigl package is not installed")
        if backend not in ("libigl", "torch"):
            raise ValueError(f"unknown geometry backend {backend!r}")
        self.backend = backend
        self._igl = igl
        self._faces_c = np.ascontiguousarray(mesh.faces, dtype=np.int64)
        self._vertices_c = np.ascontiguousarray(mesh.vertices, dtype=np.float64)
        self._torch_mesh = None

    def _torch_arrays(self, points):
        import torch

        if self._torch_mesh is None:
            # float64 on the CPU for a true reference; float32 on CUDA where fp64 is slow.
            dtype = torch.float64 if self.device == "cpu" else torch.float32
            self._torch_mesh = (
                torch.as_tensor(self._vertices_c, dtype=dtype, device=self.device),
                torch.as_tensor(self._faces_c, dtype=torch.long, device=self.device),
            )
        vertices, faces = self._torch_mesh
        return vertices, faces, torch.as_tensor(points, dtype=vertices.dtype, device=self.device)

    def closest_points(self, points: np.ndarray):
        """(distance (q,), closest point (q, 3), face index (q,)) for points (q, 3)."""
        points = _as_points(points)
        if self.backend == "libigl":
            sq, face, closest = self._igl.point_mesh_squared_distance(
                points, self._vertices_c, self._faces_c
            )
            return np.sqrt(np.maximum(sq, 0.0)), closest, face.astype(np.int64)
        from . import bruteforce

        vertices, faces, p = self._torch_arrays(points)
        distance, closest, face = bruteforce.closest_points(vertices, faces, p)
        return (
            distance.double().cpu().numpy(),
            closest.double().cpu().numpy(),
            face.cpu().numpy(),
        )

    def distance(self, points: np.ndarray) -> np.ndarray:
        return self.closest_points(points)[0]

    def winding_number(self, points: np.ndarray) -> np.ndarray:
        points = _as_points(points)
        if self.backend == "libigl":
            return self._igl.fast_winding_number(self._vertices_c, self._faces_c, points)
        from . import bruteforce

        vertices, faces, p = self._torch_arrays(points)
        return bruteforce.winding_number(vertices, faces, p).double().cpu().numpy()

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Exact distance, negative where the winding number exceeds 0.5 (inside)."""
        distance = self.distance(points)
        inside = self.winding_number(points) > INSIDE_WINDING
        return np.where(inside, -distance, distance)

    def occupancy(self, points: np.ndarray) -> np.ndarray:
        return self.winding_number(points) > INSIDE_WINDING


def _as_points(points) -> np.ndarray:
    points = np.ascontiguousarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"query points must have shape (q, 3), got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("query points contain NaN or infinite coordinates")
    return points
