"""Ground-truth queries on a triangle mesh: distance, winding number, signed distance, occupancy.

`MeshQuery` picks the fastest exact backend available:
- 'bvh' when Numba is installed: our BVH (bvh.py) with compiled CPU traversals (bvh_cpu.py):
  exact float64 distance and the hierarchical winding number of Barill et al. (2018), whose
  accuracy is `beta`. Measured faster than libigl for signed distance (docs/BENCHMARKS.md);
- 'libigl' when installed: its AABB tree for exact distance and its fast winding number, in
  float64 (libigl's float32 paths are unreliable, see FINDINGS.md);
- 'torch': the brute-force PyTorch reference in `bruteforce`, on `device`.
Results are float64 numpy arrays in the mesh's own coordinates whichever backend ran.
"""

from __future__ import annotations

import numpy as np

from .mesh import TriangleMesh

INSIDE_WINDING = 0.5
# Winding numbers this close to 0.5 are re-evaluated at a higher accuracy (bvh backend).
REFINE_BAND = 0.3
# On a device, doubtful points are refined by the exact brute-force sum up to this many
# point-triangle pairs (a few tens of milliseconds on an H100).
BRUTE_FORCE_REFINE_PAIRS = 1 << 31


def _libigl():
    try:
        import igl  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    return igl


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# bvh: Numba on the CPU; triton: Triton kernels on CUDA; bvh-torch: the same walks in plain
# PyTorch on any device; libigl; torch: brute force (the reference).
BACKENDS = ("bvh", "triton", "bvh-torch", "libigl", "torch")
BVH_BACKENDS = ("bvh", "triton", "bvh-torch")


class MeshQuery:
    """Exact queries against one mesh. `backend` is 'auto' or one of BACKENDS; `beta` is the
    accuracy of the hierarchical winding number (larger is more accurate and slower)."""

    def __init__(self, mesh: TriangleMesh, device: str = "cpu", backend: str = "auto", beta: float = 2.0):
        self.mesh = mesh
        self.device = str(device)
        self.beta = float(beta)
        igl = _libigl()
        if backend == "auto":
            if self.device.startswith("cuda"):
                backend = "triton" if _has_module("triton") else "bvh-torch"
            elif _has_module("numba"):
                backend = "bvh"
            else:
                backend = "libigl" if igl is not None else "bvh-torch"
        if backend not in BACKENDS:
            raise ValueError(f"unknown geometry backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        for name, module in (("libigl", "igl"), ("bvh", "numba"), ("triton", "triton")):
            if backend == name and not _has_module(module):
                raise ValueError(f"backend {name!r} requested but the {module} package is not installed")
        if backend == "triton" and not self.device.startswith("cuda"):
            raise ValueError("backend 'triton' runs on CUDA only; use device 'cuda'")
        self.backend = backend
        self._bvh = None
        self._device_bvh = None
        low, high = mesh.bounds
        self._origin = 0.5 * (low + high)  # the BVH's frame (see `bvh`)
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

    @property
    def bvh(self):
        """The BVH of the mesh moved so its bounding box is centred on the origin: float32 boxes
        and GPU arithmetic then keep their precision for meshes far from the origin (1e6)."""
        if self._bvh is None:
            from .bvh import build_bvh

            self._bvh = build_bvh(TriangleMesh(self.mesh.vertices - self._origin, self.mesh.faces))
        return self._bvh

    def _local(self, points: np.ndarray) -> np.ndarray:
        """Points in the BVH's frame (see `bvh`)."""
        return points - self._origin

    @property
    def device_bvh(self):
        """The BVH's arrays on the query device, with the walks of the chosen backend."""
        if self._device_bvh is None:
            import torch

            if self.backend == "triton":
                from .bvh_triton import TritonBVH

                self._device_bvh = TritonBVH(self.bvh, self.device)
            else:
                from .bvh_torch import DeviceBVH

                dtype = torch.float64 if self.device == "cpu" else torch.float32
                self._device_bvh = DeviceBVH(self.bvh, self.device, dtype)
        return self._device_bvh

    def _device_points(self, points):
        import torch

        return torch.as_tensor(self._local(points), device=self.device, dtype=self.device_bvh.dtype)

    def closest_points(self, points: np.ndarray):
        """(distance (q,), closest point (q, 3), face index (q,)) for points (q, 3)."""
        points = _as_points(points)
        if self.backend == "bvh":
            from . import bvh_cpu

            distance, closest, face = bvh_cpu.closest_points(self.bvh, self._local(points))
            return distance, closest + self._origin, face
        if self.backend in ("triton", "bvh-torch"):
            from . import bvh_torch

            tree = self.device_bvh
            walk = tree.closest_points if self.backend == "triton" else (lambda p: bvh_torch.closest_points(tree, p))
            distance, closest, face = walk(self._device_points(points))
            closest = closest.double().cpu().numpy() + self._origin
            return distance.double().cpu().numpy(), closest, face.cpu().numpy()
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
        if self.backend in BVH_BACKENDS:
            return self._refine(points, self._hierarchical_winding(points, self.beta))
        if self.backend == "libigl":
            return self._igl.fast_winding_number(self._vertices_c, self._faces_c, points)
        from . import bruteforce

        vertices, faces, p = self._torch_arrays(points)
        return bruteforce.winding_number(vertices, faces, p).double().cpu().numpy()

    def _refine(self, points: np.ndarray, winding: np.ndarray) -> np.ndarray:
        """The far-field expansion is second order, so values can be off by a few percent at
        small beta (7% inside a 320-face sphere at beta 2). Where the sign could be in doubt,
        evaluate again three times more accurately (error ~ beta^-3, about 0.1%)."""
        doubtful = np.abs(winding - INSIDE_WINDING) < REFINE_BAND
        if self.beta > 0 and doubtful.any():
            winding[doubtful] = self._hierarchical_winding(points[doubtful], 3.0 * self.beta)
        return winding

    def _hierarchical_winding(self, points: np.ndarray, beta: float) -> np.ndarray:
        if self.backend == "bvh":
            from . import bvh_cpu

            return bvh_cpu.winding_number(self.bvh, self._local(points), beta)
        from . import bvh_torch

        tree = self.device_bvh
        if self.backend == "triton":
            values = tree.winding_number(self._device_points(points), beta)
        else:
            values = bvh_torch.winding_number(tree, self._device_points(points), beta)
        return values.double().cpu().numpy()

    def distance_and_winding(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact distance and winding number; on the CPU in one walk of the BVH (the kernel the
        ground truth compiles anyway)."""
        if self.backend == "bvh":
            from . import bvh_cpu

            points = _as_points(points)
            distance, winding = bvh_cpu.distance_and_winding(self.bvh, self._local(points), self.beta)
            return distance, self._refine(points, winding)
        return self.distance(points), self.winding_number(points)

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Exact distance, negative where the winding number exceeds 0.5 (inside)."""
        distance, winding = self.distance_and_winding(points)
        return np.where(winding > INSIDE_WINDING, -distance, distance)

    def signed_distance_tensor(self, points):
        """Signed distance of a float tensor of points (q, 3), as float32 on the points' device.
        With the Triton or plain-torch BVH walks, nothing leaves the device."""
        import torch

        if self.backend not in ("triton", "bvh-torch") or points.device != torch.device(self.device):
            values = self.signed_distance(points.detach().double().cpu().numpy())
            return torch.as_tensor(values, dtype=torch.float32, device=points.device)
        from . import bvh_torch

        tree = self.device_bvh
        local = points.to(tree.dtype) - torch.as_tensor(self._origin, dtype=tree.dtype, device=points.device)
        if self.backend == "triton":
            distance = tree.closest_points(local)[0]
            winding = tree.winding_number(local, self.beta)
        else:
            distance = bvh_torch.closest_points(tree, local)[0]
            winding = bvh_torch.winding_number(tree, local, self.beta)
        doubtful = (winding - INSIDE_WINDING).abs() < REFINE_BAND
        if self.beta > 0 and bool(doubtful.any()):
            subset = local[doubtful]
            if subset.is_cuda and len(subset) * len(self.mesh.faces) <= BRUTE_FORCE_REFINE_PAIRS:
                # Few doubtful points (those near holes): the exact sum over all triangles keeps
                # the whole GPU busy, where a deeper walk for so few lanes left it idle (0.3 s
                # for 7,000 points on the bunny, against 13 ms for the whole 2M-point pool).
                from . import bruteforce

                vertices = torch.as_tensor(self.bvh.vertices, dtype=tree.dtype, device=subset.device)
                faces = torch.as_tensor(self.bvh.faces, device=subset.device)
                refined = bruteforce.winding_number(vertices, faces, subset, pairs_per_chunk=1 << 26)
            elif self.backend == "triton":
                refined = tree.winding_number(subset, 3.0 * self.beta)
            else:
                refined = bvh_torch.winding_number(tree, subset, 3.0 * self.beta)
            winding[doubtful] = refined.to(winding.dtype)
        return torch.where(winding > INSIDE_WINDING, -distance, distance).float()

    def distance_tensor(self, points):
        """Unsigned distance of a float tensor of points (q, 3), as float32 on the points' device
        (no winding number: a shell's ground truth needs no sign)."""
        import torch

        if self.backend not in ("triton", "bvh-torch") or points.device != torch.device(self.device):
            values = self.distance(points.detach().double().cpu().numpy())
            return torch.as_tensor(values, dtype=torch.float32, device=points.device)
        from . import bvh_torch

        tree = self.device_bvh
        local = points.to(tree.dtype) - torch.as_tensor(self._origin, dtype=tree.dtype, device=points.device)
        distance = tree.closest_points(local)[0] if self.backend == "triton" else bvh_torch.closest_points(tree, local)[0]
        return distance.float()

    def occupancy(self, points: np.ndarray) -> np.ndarray:
        return self.winding_number(points) > INSIDE_WINDING


def _as_points(points) -> np.ndarray:
    points = np.ascontiguousarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"query points must have shape (q, 3), got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError("query points contain NaN or infinite coordinates")
    return points
