"""Reading and writing triangle meshes: Wavefront OBJ, PLY (ASCII and binary), NPZ.

NPZ files hold arrays `vertices` (n, 3) and `faces` (m, 3) and are read without pickle.
Polygons are fan-triangulated on read. Every failure is a ValueError (or FileNotFoundError)
naming the file and the problem.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from ..geometry import TriangleMesh

MESH_SUFFIXES = (".obj", ".ply", ".npz")


def load_mesh(path: str | os.PathLike) -> TriangleMesh:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mesh file not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".obj":
            vertices, faces = _read_obj(path)
        elif suffix == ".ply":
            vertices, faces = _read_ply(path)
        elif suffix == ".npz":
            vertices, faces = _read_npz(path)
        else:
            raise ValueError(f"unsupported mesh format {suffix!r}; use .obj, .ply or .npz")
        return TriangleMesh(vertices, faces)
    except (ValueError, KeyError, IndexError, OSError, UnicodeDecodeError, zipfile.BadZipFile) as error:
        raise ValueError(f"cannot read mesh {path}: {error}") from error


def load_points_or_mesh(path: str | os.PathLike):
    """A point cloud or a mesh from a file: ('points', (n, 3) array) for an NPZ with an array
    `points` or a PLY without faces; ('mesh', TriangleMesh) for a mesh (OBJ, PLY or NPZ with
    `vertices` and `faces`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input file not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "points" in data:
                    return "points", _checked_points(np.asarray(data["points"]))
        elif suffix == ".ply":
            vertices, faces = _read_ply(path)
            if len(faces) == 0:
                return "points", _checked_points(vertices)
    except (ValueError, KeyError, IndexError, OSError, UnicodeDecodeError, zipfile.BadZipFile) as error:
        raise ValueError(f"cannot read {path}: {error}") from error
    return "mesh", load_mesh(path)


def _checked_points(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (n, 3), got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{int(np.count_nonzero(~np.all(np.isfinite(points), axis=1)))} points have NaN or infinite coordinates")
    return points


def _fan(polygon: list[int]) -> list[list[int]]:
    return [[polygon[0], polygon[i], polygon[i + 1]] for i in range(1, len(polygon) - 1)]


def _read_obj(path):
    vertices, faces = [], []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line_number, line in enumerate(handle, 1):
            if line.startswith("v "):
                parts = line.split()
                if len(parts) < 4:
                    raise ValueError(f"line {line_number}: a vertex needs three coordinates")
                vertices.append((float(parts[1]), float(parts[2]), float(parts[3])))
            elif line.startswith("f "):
                corners = []
                for token in line.split()[1:]:
                    index = int(token.split("/")[0])
                    # OBJ indices are 1-based; negative ones count back from the last vertex.
                    corners.append(index - 1 if index > 0 else len(vertices) + index)
                if len(corners) < 3:
                    raise ValueError(f"line {line_number}: a face needs at least three corners")
                faces.extend(_fan(corners))
    if not vertices:
        raise ValueError("no vertices ('v' lines) found")
    return np.array(vertices, dtype=np.float64), np.array(faces, dtype=np.int64).reshape(-1, 3)


_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def _read_ply(path):
    with open(path, "rb") as handle:
        if handle.readline().strip() != b"ply":
            raise ValueError("not a PLY file (missing 'ply' magic)")
        fmt, elements = None, []
        while True:
            line = handle.readline()
            if not line:
                raise ValueError("header ends before 'end_header'")
            words = line.decode("ascii", errors="replace").split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                elements.append({"name": words[1], "count": int(words[2]), "props": []})
            elif words[0] == "property":
                if words[1] == "list":
                    elements[-1]["props"].append((words[4], "list", _PLY_TYPES[words[2]], _PLY_TYPES[words[3]]))
                else:
                    elements[-1]["props"].append((words[2], "scalar", _PLY_TYPES[words[1]], None))
            elif words[0] == "end_header":
                break
        if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
            raise ValueError(f"unsupported PLY format {fmt!r}")
        if fmt == "ascii":
            tokens = handle.read().split()
            reader = _AsciiReader(tokens)
        else:
            reader = _BinaryReader(handle.read(), "<" if fmt == "binary_little_endian" else ">")
    vertices, faces = None, []
    for element in elements:
        data = reader.read_element(element)
        if element["name"] == "vertex":
            vertices = np.stack([data["x"], data["y"], data["z"]], axis=1).astype(np.float64)
        elif element["name"] == "face":
            key = "vertex_indices" if "vertex_indices" in data else "vertex_index"
            for polygon in data[key]:
                faces.extend(_fan([int(i) for i in polygon]))
    if vertices is None:
        raise ValueError("no 'vertex' element")
    return vertices, np.array(faces, dtype=np.int64).reshape(-1, 3)


class _AsciiReader:
    def __init__(self, tokens):
        self.tokens, self.at = tokens, 0

    def _take(self, count):
        if self.at + count > len(self.tokens):
            raise ValueError("file ends before all elements were read")
        out = self.tokens[self.at : self.at + count]
        self.at += count
        return out

    def read_element(self, element):
        scalars = all(kind == "scalar" for _, kind, _, _ in element["props"])
        names = [p[0] for p in element["props"]]
        if scalars:
            table = np.array(self._take(element["count"] * len(names)), dtype=np.float64)
            table = table.reshape(element["count"], len(names))
            return {name: table[:, i] for i, name in enumerate(names)}
        data = {name: [] for name in names}
        for _ in range(element["count"]):
            for name, kind, _, _ in element["props"]:
                if kind == "list":
                    count = int(self._take(1)[0])
                    data[name].append(self._take(count))
                else:
                    data[name].append(float(self._take(1)[0]))
        return data


class _BinaryReader:
    def __init__(self, buffer, order):
        self.buffer, self.at, self.order = buffer, 0, order

    def read_element(self, element):
        props = element["props"]
        if all(kind == "scalar" for _, kind, _, _ in props):
            dtype = np.dtype([(name, self.order + t) for name, _, t, _ in props])
            size = dtype.itemsize * element["count"]
            if self.at + size > len(self.buffer):
                raise ValueError("file ends before all elements were read")
            table = np.frombuffer(self.buffer, dtype=dtype, count=element["count"], offset=self.at)
            self.at += size
            return {name: table[name] for name, _, _, _ in props}
        data = {name: [] for name, _, _, _ in props}
        for _ in range(element["count"]):
            for name, kind, count_type, item_type in props:
                if kind == "list":
                    count = int(self._scalar(count_type))
                    dtype = np.dtype(self.order + item_type)
                    data[name].append(
                        np.frombuffer(self.buffer, dtype=dtype, count=count, offset=self.at)
                    )
                    self.at += dtype.itemsize * count
                else:
                    data[name].append(self._scalar(count_type))
        return data

    def _scalar(self, type_code):
        dtype = np.dtype(self.order + type_code)
        if self.at + dtype.itemsize > len(self.buffer):
            raise ValueError("file ends before all elements were read")
        value = np.frombuffer(self.buffer, dtype=dtype, count=1, offset=self.at)[0]
        self.at += dtype.itemsize
        return value


def _read_npz(path):
    with np.load(path, allow_pickle=False) as data:
        for key in ("vertices", "faces"):
            if key not in data:
                raise ValueError(f"NPZ mesh needs arrays 'vertices' and 'faces'; '{key}' is missing")
        return np.asarray(data["vertices"]), np.asarray(data["faces"])


def save_mesh(path: str | os.PathLike, mesh: TriangleMesh, normals: np.ndarray | None = None) -> None:
    """Write OBJ, PLY (binary little-endian) or NPZ by suffix, atomically; with `normals` (n, 3),
    per-vertex normals too (OBJ vn, PLY nx ny nz, NPZ array `normals`)."""
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float64)
        if normals.shape != mesh.vertices.shape:
            raise ValueError(f"normals must have shape {mesh.vertices.shape}, got {normals.shape}")
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"unsupported output format {suffix!r}; use .obj, .ply or .npz")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            if suffix == ".obj":
                _write_obj(handle, mesh, normals)
            elif suffix == ".ply":
                _write_ply(handle, mesh, normals)
            else:
                arrays = {} if normals is None else {"normals": normals}
                np.savez(handle, vertices=mesh.vertices, faces=mesh.faces, **arrays)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _write_obj(handle, mesh, normals=None):
    lines = ["# written by Neural Field\n"]
    lines += [f"v {x:.9g} {y:.9g} {z:.9g}\n" for x, y, z in mesh.vertices]
    if normals is None:
        lines += [f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in mesh.faces]
    else:
        lines += [f"vn {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in normals]
        lines += [f"f {a + 1}//{a + 1} {b + 1}//{b + 1} {c + 1}//{c + 1}\n" for a, b, c in mesh.faces]
    handle.write("".join(lines).encode("ascii"))


def _write_ply(handle, mesh, normals=None):
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment written by Neural Field\n"
        f"element vertex {len(mesh.vertices)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        + ("" if normals is None else "property float nx\nproperty float ny\nproperty float nz\n")
        + f"element face {len(mesh.faces)}\n"
        "property list uchar int vertex_indices\nend_header\n"
    )
    handle.write(header.encode("ascii"))
    columns = mesh.vertices if normals is None else np.concatenate([mesh.vertices, normals], axis=1)
    handle.write(columns.astype("<f4").tobytes())
    record = np.dtype([("n", "u1"), ("v", "<i4", (3,))])
    faces = np.empty(len(mesh.faces), dtype=record)
    faces["n"] = 3
    faces["v"] = mesh.faces
    handle.write(faces.tobytes())
