"""What the tests share beyond fixtures: checks of meshes (closed, consistently wound), a plain OBJ
writer and reader of their own, Blender's Suzanne, and where the shared meshes are. Not tests.

The shapes themselves (spheres, tori, a chair, exact signed distances) are the package's
procedural module, neural_field_addon/core/geometry/procedural.py, which the benchmarks use too.
Imported by the test modules as `from checks import ...` (conftest.py puts this folder on
sys.path).
"""

from __future__ import annotations

import os

import numpy as np

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
# The shared meshes live beside the repository checkout (../shared/meshes), never inside it.
SHARED_MESHES = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "meshes"))


# ----------------------------------------------------------------------------- mesh checks


def inscribed_gap(vertices, faces) -> float:
    """Largest gap between a sphere centred at the origin through all `vertices` and its
    inscribed mesh: radius minus the smallest distance from the origin to a face plane.
    This bounds |mesh distance - sphere distance| for every query point (Hausdorff)."""
    tri = vertices[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    plane_distance = np.abs(np.sum(normal * tri[:, 0], axis=1))
    radius = float(np.linalg.norm(vertices, axis=1).max())
    return radius - float(plane_distance.min())


def edge_face_counts(faces) -> np.ndarray:
    """How many faces use each undirected edge."""
    faces = np.asarray(faces)
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return counts


def directed_edges_unique(faces) -> bool:
    """True when no directed edge appears twice: neighbouring faces are wound consistently."""
    faces = np.asarray(faces)
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return len(np.unique(directed, axis=0)) == len(directed)


def write_obj(path, vertices, faces) -> None:
    """A minimal Wavefront OBJ, written here rather than through our own meshio on purpose."""
    with open(path, "w", encoding="ascii") as handle:
        handle.writelines(f"v {x:.17g} {y:.17g} {z:.17g}\n" for x, y, z in vertices)
        handle.writelines(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces)


def read_obj(path):
    """Vertices and triangle faces of an OBJ of `v` and triangle `f` lines (tests' own reader)."""
    vertices, faces = [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("v "):
                vertices.append([float(x) for x in line.split()[1:4]])
            elif line.startswith("f "):
                faces.append([int(token.split("/")[0]) - 1 for token in line.split()[1:4]])
    return np.array(vertices, dtype=np.float64), np.array(faces, dtype=np.int64)


def suzanne():
    """Blender's Suzanne, triangulated: (vertices, faces). Skips the test without bpy."""
    import pytest

    bpy = pytest.importorskip("bpy")
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.mesh.primitive_monkey_add()
    mesh = bpy.context.active_object.data
    mesh.calc_loop_triangles()
    return np.array([v.co[:] for v in mesh.vertices]), np.array([t.vertices[:] for t in mesh.loop_triangles])


class RecordedEvents:
    """The events a runner sends (core/service/runners.Events), kept: its warnings in `warnings`."""

    def __init__(self):
        self.warnings = []

    def progress(self, info) -> None:
        pass

    def log(self, message) -> None:
        pass

    def warning(self, message) -> None:
        self.warnings.append(message)


def process_gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether process `pid` has ended within `timeout` seconds (a child of ours that has exited is
    reaped, since it stays a zombie until then)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass  # not ours: wait for it to end
        time.sleep(0.1)
    return False
