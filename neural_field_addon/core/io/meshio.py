"""Reading and writing triangle meshes: Wavefront OBJ, PLY (ASCII and binary), NPZ.

NPZ files hold arrays `vertices` (n, 3) and `faces` (m, 3) and are read without pickle.
Polygons are fan-triangulated on read. Every failure is a ValueError (or FileNotFoundError)
naming the file and the problem.

Colours (`load_colored_mesh`): an OBJ's MTL materials (`Kd`, taken as linear as Blender's importer
does, and `map_Kd` images read through the `vt` coordinates), or its vertex colours
(`v x y z r g b`, sRGB); a PLY's vertex `red green blue` (sRGB, bytes or 0..1); an NPZ's arrays
of appearance.surface_colors.COLOR_ARRAYS. A colour source that cannot be used (an image file
that is missing, faces without UVs) is skipped with a note that names it; the shape still loads.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

from ..appearance.colorspace import linear_to_srgb, srgb_to_linear, to_bytes
from ..appearance.surface_colors import SurfaceColors, colors_from_arrays
from ..geometry import TriangleMesh
from .images import read_texture, write_texture

MESH_SUFFIXES = (".obj", ".ply", ".npz")


_READ_ERRORS = (ValueError, KeyError, IndexError, OSError, UnicodeDecodeError, zipfile.BadZipFile)


def load_mesh(path: str | os.PathLike) -> TriangleMesh:
    return _load(path, with_colors=False).mesh


@dataclass(frozen=True)
class ColoredMesh:
    """A mesh with the colours of its surface (None if the file has none), and notes on the
    colour sources that were skipped and why."""

    mesh: TriangleMesh
    colors: SurfaceColors | None = None
    notes: tuple = ()


def load_colored_mesh(path: str | os.PathLike) -> ColoredMesh:
    return _load(path, with_colors=True)


def _load(path, with_colors: bool) -> ColoredMesh:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mesh file not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"cannot read mesh {path}: unsupported mesh format {suffix!r}; use .obj, .ply or .npz")
    try:
        colors, notes = None, []
        if suffix == ".obj":
            read = _read_obj(path, with_colors)
            vertices, faces = read[:2]
            if with_colors:
                colors = _obj_colors(path, faces, read[2], notes)
        elif suffix == ".ply":
            vertices, faces, vertex_colors = _read_ply(path)
            if with_colors and vertex_colors is not None:
                colors = SurfaceColors.from_vertex_colors(faces, srgb_to_linear(vertex_colors))
        else:
            with np.load(path, allow_pickle=False) as data:
                vertices, faces = _npz_mesh(data)
                if with_colors:
                    colors = colors_from_arrays(data, faces)
        mesh = TriangleMesh(vertices, faces)
        return ColoredMesh(mesh, colors.check(mesh) if colors is not None else None, tuple(notes))
    except _READ_ERRORS as error:
        raise ValueError(f"cannot read mesh {path}: {error}") from error


def load_points_or_mesh(path: str | os.PathLike):
    """A point cloud or a mesh from a file, with colours where it has them: ('points', (n, 3)
    array, linear colours (n, 3) or None) for an NPZ with an array `points` (and `colors`: float
    linear, or uint8 sRGB) or a PLY without faces (`red green blue`, sRGB); ('mesh', TriangleMesh,
    SurfaceColors or None) for a mesh (OBJ, PLY or NPZ with `vertices` and `faces`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input file not found: {path}")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "points" in data:
                    points = _checked_points(np.asarray(data["points"]))
                    colors = None
                    if "colors" in data:
                        colors = _point_colors(np.asarray(data["colors"]), len(points), srgb=data["colors"].dtype == np.uint8)
                    return "points", points, colors
        elif suffix == ".ply":
            vertices, faces, vertex_colors = _read_ply(path)
            if len(faces) == 0:
                points = _checked_points(vertices)
                colors = None if vertex_colors is None else _point_colors(vertex_colors, len(points), srgb=True)
                return "points", points, colors
    except _READ_ERRORS as error:
        raise ValueError(f"cannot read {path}: {error}") from error
    source = load_colored_mesh(path)
    return "mesh", source.mesh, source.colors


def _point_colors(colors: np.ndarray, count: int, srgb: bool) -> np.ndarray:
    """Linear colours (n, 3) of n points from bytes or 0..1 values (sRGB where `srgb`)."""
    colors = np.asarray(colors)
    if colors.ndim != 2 or colors.shape[0] != count or colors.shape[1] not in (3, 4):
        raise ValueError(f"colors must have shape ({count}, 3) or ({count}, 4), got {colors.shape}")
    values = colors[:, :3].astype(np.float32)
    if colors.dtype == np.uint8:
        values = values / 255.0
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{int(np.count_nonzero(~np.all(np.isfinite(values), axis=1)))} point colours are NaN "
                         "or infinite")
    return srgb_to_linear(values) if srgb else np.clip(values, 0.0, 1.0)


def _checked_points(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (n, 3), got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{int(np.count_nonzero(~np.all(np.isfinite(points), axis=1)))} points have NaN or infinite coordinates")
    return points


def _fan(polygon: list[int]) -> list[list[int]]:
    return [[polygon[0], polygon[i], polygon[i + 1]] for i in range(1, len(polygon) - 1)]


def _read_obj(path, with_colors: bool = False):
    """Vertices and triangles of an OBJ; with `with_colors`, also what its colour needs: per-vertex
    colours ('v x y z r g b'), texture coordinates and each corner's, and each face's material."""
    vertices, faces = [], []
    vertex_colors, uvs, corner_uv, face_material = [], [], [], []
    materials, libraries = [], []
    material = -1
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line_number, line in enumerate(handle, 1):
            if line.startswith("v "):
                parts = line.split()
                if len(parts) < 4:
                    raise ValueError(f"line {line_number}: a vertex needs three coordinates")
                vertices.append((float(parts[1]), float(parts[2]), float(parts[3])))
                if with_colors and len(parts) >= 7:
                    vertex_colors.append((float(parts[4]), float(parts[5]), float(parts[6])))
            elif line.startswith("f "):
                corners, corner_uvs = [], []
                for token in line.split()[1:]:
                    indices = token.split("/")
                    corners.append(_obj_index(int(indices[0]), len(vertices)))
                    if with_colors:
                        corner_uvs.append(_obj_index(int(indices[1]), len(uvs)) if len(indices) > 1 and indices[1] else -1)
                if len(corners) < 3:
                    raise ValueError(f"line {line_number}: a face needs at least three corners")
                faces.extend(_fan(corners))
                if with_colors:
                    corner_uv.extend(_fan(corner_uvs))
                    face_material.extend([material] * (len(corners) - 2))
            elif with_colors and line.startswith("vt "):
                parts = line.split()
                uvs.append((float(parts[1]), float(parts[2]) if len(parts) > 2 else 0.0))
            elif with_colors and line.startswith("usemtl"):
                name = line[len("usemtl"):].strip()
                if name not in materials:
                    materials.append(name)
                material = materials.index(name)
            elif with_colors and line.startswith("mtllib"):
                libraries.extend(line.split()[1:])
    if not vertices:
        raise ValueError("no vertices ('v' lines) found")
    vertices = np.array(vertices, dtype=np.float64)
    faces = np.array(faces, dtype=np.int64).reshape(-1, 3)
    if not with_colors:
        return vertices, faces
    extra = {
        "vertex_colors": np.array(vertex_colors, dtype=np.float32) if len(vertex_colors) == len(vertices) else None,
        "uvs": np.array(uvs, dtype=np.float32).reshape(-1, 2),
        "corner_uv": np.array(corner_uv, dtype=np.int64).reshape(-1, 3),
        "face_material": np.array(face_material, dtype=np.int64),
        "materials": materials,
        "libraries": libraries,
    }
    return vertices, faces, extra


def _read_mtl(path: str) -> dict:
    """Materials of an MTL file: name -> {'Kd': (r, g, b) or None, 'map_Kd': image path or None}."""
    materials, current = {}, None
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            words = line.split()
            if not words:
                continue
            if words[0] == "newmtl":
                current = materials.setdefault(line.strip()[len("newmtl"):].strip(), {"Kd": None, "map_Kd": None})
            elif current is not None and words[0] == "Kd" and len(words) >= 4:
                current["Kd"] = tuple(float(value) for value in words[1:4])
            elif current is not None and words[0] == "map_Kd" and len(words) >= 2:
                # Options (-s, -o, -bm ...) come first; the file name is last.
                current["map_Kd"] = os.path.join(os.path.dirname(path), words[-1])
    return materials


# Blender's default Base Color: what faces without a material or a colour show.
DEFAULT_COLOR = 0.8


def _obj_colors(path: str, faces: np.ndarray, extra: dict, notes: list) -> SurfaceColors | None:
    """The surface colours an OBJ describes (materials' Kd and map_Kd through vt; else its vertex
    colours), or None; `notes` gets what was skipped and why."""
    vertex_colors = extra["vertex_colors"]
    library = {}
    for name in extra["libraries"]:
        mtl = os.path.join(os.path.dirname(path), name)
        if os.path.isfile(mtl):
            library.update(_read_mtl(mtl))
        else:
            notes.append(f"material library {name} not found beside {os.path.basename(path)}: its colours are skipped")
    used = [library.get(name) for name in extra["materials"]]
    if vertex_colors is None and not any(used):
        return None
    if vertex_colors is not None:
        corner_colors = srgb_to_linear(vertex_colors)[faces]
    else:
        corner_colors = np.full((len(faces), 3, 3), DEFAULT_COLOR, dtype=np.float32)
    face_material = extra["face_material"]
    face_texture = np.full(len(faces), -1, dtype=np.int32)
    textures = []
    corner_uv = extra["corner_uv"]
    for index, material in enumerate(used):
        if material is None:
            continue
        faces_of = face_material == index
        if material["Kd"] is not None and vertex_colors is None:
            corner_colors[faces_of] = np.asarray(material["Kd"], dtype=np.float32)
        image = material["map_Kd"]
        if image is None:
            continue
        try:
            texture = read_texture(image)
        except (FileNotFoundError, ValueError) as error:
            notes.append(f"colour skipped: the texture {os.path.basename(image)} of material "
                         f"{extra['materials'][index]!r} cannot be used ({error})")
            return None
        with_uvs = faces_of & np.all(corner_uv >= 0, axis=1)
        if not with_uvs.any():
            notes.append(f"the texture {os.path.basename(image)} of material {extra['materials'][index]!r} is "
                         "skipped: its faces have no texture coordinates (vt)")
            continue
        if with_uvs.sum() < faces_of.sum():
            notes.append(f"{int(faces_of.sum() - with_uvs.sum())} faces of material {extra['materials'][index]!r} "
                         "have no texture coordinates: they take its Kd colour")
        face_texture[with_uvs] = len(textures)
        textures.append(texture)
    if not textures:
        return SurfaceColors(corner_colors)
    uvs = extra["uvs"][np.clip(corner_uv, 0, None)] if len(extra["uvs"]) else np.zeros((len(faces), 3, 2))
    return SurfaceColors(corner_colors, uvs, face_texture, tuple(textures))


def _obj_index(index: int, count: int) -> int:
    """OBJ indices are 1-based; negative ones count back from the last element so far."""
    return index - 1 if index > 0 else count + index


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
    vertices, faces, colors = None, [], None
    for element in elements:
        data = reader.read_element(element)
        if element["name"] == "vertex":
            vertices = np.stack([data["x"], data["y"], data["z"]], axis=1).astype(np.float64)
            colors = _ply_colors(element, data)
        elif element["name"] == "face":
            key = "vertex_indices" if "vertex_indices" in data else "vertex_index"
            for polygon in data[key]:
                faces.extend(_fan([int(i) for i in polygon]))
    if vertices is None:
        raise ValueError("no 'vertex' element")
    return vertices, np.array(faces, dtype=np.int64).reshape(-1, 3), colors


def _ply_colors(element: dict, data: dict) -> np.ndarray | None:
    """Vertex colours (n, 3) in sRGB 0..1 from `red green blue` (or `r g b`): integer types
    scaled by their range, floats as they are."""
    types = {name: item for name, _, item, _ in element["props"]}
    for names in (("red", "green", "blue"), ("r", "g", "b")):
        if all(name in data for name in names):
            kind = np.dtype(types[names[0]])
            top = float(np.iinfo(kind).max) if kind.kind in "iu" else 1.0
            return np.stack([np.asarray(data[name], dtype=np.float32) for name in names], axis=1) / top
    return None


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


def _npz_mesh(data):
    for key in ("vertices", "faces"):
        if key not in data:
            raise ValueError(f"NPZ mesh needs arrays 'vertices' and 'faces'; '{key}' is missing")
    return np.asarray(data["vertices"]), np.asarray(data["faces"])


@dataclass(frozen=True)
class MeshAppearance:
    """What an output mesh carries beside its shape: per-vertex colours (n, 3) linear, and/or
    per-vertex UVs (n, 2) with the texture they read (appearance.surface_colors.Texture)."""

    colors: np.ndarray | None = None
    uvs: np.ndarray | None = None
    texture: object = None

    def check(self, mesh: TriangleMesh) -> "MeshAppearance":
        count = len(mesh.vertices)
        if self.colors is not None and np.shape(self.colors) != (count, 3):
            raise ValueError(f"vertex colours must have shape ({count}, 3), got {np.shape(self.colors)}")
        if (self.uvs is None) != (self.texture is None):
            raise ValueError("a texture needs UVs, and UVs their texture")
        if self.uvs is not None and np.shape(self.uvs) != (count, 2):
            raise ValueError(f"UVs must have shape ({count}, 2), got {np.shape(self.uvs)}")
        return self


def save_mesh(path: str | os.PathLike, mesh: TriangleMesh, normals: np.ndarray | None = None,
              appearance: MeshAppearance | None = None) -> list[str]:
    """Write OBJ, PLY (binary little-endian) or NPZ by suffix, atomically; with `normals` (n, 3),
    per-vertex normals too (OBJ vn, PLY nx ny nz, NPZ array `normals`). With an appearance:
    vertex colours (OBJ `v x y z r g b` and PLY `red green blue` in sRGB, NPZ `colors` linear)
    and a texture (OBJ `vt` with an MTL and a PNG beside it, PLY `texture_u texture_v` with the
    PNG named in a comment, NPZ `uvs` and `texture`). Returns the files written."""
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float64)
        if normals.shape != mesh.vertices.shape:
            raise ValueError(f"normals must have shape {mesh.vertices.shape}, got {normals.shape}")
    appearance = (appearance or MeshAppearance()).check(mesh)
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"unsupported output format {suffix!r}; use .obj, .ply or .npz")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    stem = os.path.splitext(os.path.basename(path))[0]
    written = []
    if appearance.texture is not None and suffix != ".npz":
        image = os.path.join(directory, f"{stem}.png")
        write_texture(image, appearance.texture)
        written.append(image)
    if appearance.texture is not None and suffix == ".obj":
        material = os.path.join(directory, f"{stem}.mtl")
        _write_atomically(material, lambda handle: handle.write(_mtl(stem).encode("utf-8")))
        written.append(material)

    def write(handle):
        if suffix == ".obj":
            _write_obj(handle, mesh, normals, appearance, stem)
        elif suffix == ".ply":
            _write_ply(handle, mesh, normals, appearance, stem)
        else:
            arrays = {} if normals is None else {"normals": normals}
            if appearance.colors is not None:
                arrays["colors"] = np.asarray(appearance.colors, dtype=np.float32)
            if appearance.texture is not None:
                arrays["uvs"] = np.asarray(appearance.uvs, dtype=np.float32)
                arrays["texture"] = appearance.texture.pixels
            np.savez(handle, vertices=mesh.vertices, faces=mesh.faces, **arrays)

    _write_atomically(path, write)
    return [path, *written]


def _write_atomically(path: str, write) -> None:
    temporary = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _mtl(stem: str) -> str:
    # Kd 1: the texture is the colour; Ka/Ks 0 and illum 1, a plain diffuse material.
    return (f"# written by Neural Field\nnewmtl {stem}\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nillum 1\n"
            f"map_Kd {stem}.png\n")


def _write_obj(handle, mesh, normals=None, appearance: MeshAppearance | None = None, stem: str = ""):
    appearance = appearance or MeshAppearance()
    lines = ["# written by Neural Field\n"]
    if appearance.texture is not None:
        lines += [f"mtllib {stem}.mtl\n", f"usemtl {stem}\n"]
    if appearance.colors is None:
        lines += [f"v {x:.9g} {y:.9g} {z:.9g}\n" for x, y, z in mesh.vertices]
    else:
        srgb = linear_to_srgb(appearance.colors)
        lines += [f"v {x:.9g} {y:.9g} {z:.9g} {r:.4f} {g:.4f} {b:.4f}\n"
                  for (x, y, z), (r, g, b) in zip(mesh.vertices, srgb)]
    if appearance.uvs is not None:
        lines += [f"vt {u:.6f} {v:.6f}\n" for u, v in appearance.uvs]
    if normals is not None:
        lines += [f"vn {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in normals]
    corner = {(False, False): "{0}", (False, True): "{0}//{0}", (True, False): "{0}/{0}", (True, True): "{0}/{0}/{0}"}[
        (appearance.uvs is not None, normals is not None)]
    lines += ["f " + " ".join(corner.format(index + 1) for index in face) + "\n" for face in mesh.faces]
    handle.write("".join(lines).encode("ascii"))


def _write_ply(handle, mesh, normals=None, appearance: MeshAppearance | None = None, stem: str = ""):
    appearance = appearance or MeshAppearance()
    columns = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if normals is not None:
        columns += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if appearance.colors is not None:
        columns += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    if appearance.uvs is not None:
        columns += [("texture_u", "<f4"), ("texture_v", "<f4")]
    ply_type = {"<f4": "float", "u1": "uchar"}
    header = ["ply", "format binary_little_endian 1.0", "comment written by Neural Field"]
    if appearance.texture is not None:
        header.append(f"comment TextureFile {stem}.png")
    header.append(f"element vertex {len(mesh.vertices)}")
    header += [f"property {ply_type[kind]} {name}" for name, kind in columns]
    header += [f"element face {len(mesh.faces)}", "property list uchar int vertex_indices", "end_header"]
    handle.write(("\n".join(header) + "\n").encode("ascii"))
    table = np.empty(len(mesh.vertices), dtype=np.dtype(columns))
    table["x"], table["y"], table["z"] = mesh.vertices.T
    if normals is not None:
        table["nx"], table["ny"], table["nz"] = normals.T
    if appearance.colors is not None:
        table["red"], table["green"], table["blue"] = to_bytes(appearance.colors).T
    if appearance.uvs is not None:
        table["texture_u"], table["texture_v"] = np.asarray(appearance.uvs).T
    handle.write(table.tobytes())
    record = np.dtype([("n", "u1"), ("v", "<i4", (3,))])
    faces = np.empty(len(mesh.faces), dtype=record)
    faces["n"] = 3
    faces["v"] = mesh.faces
    handle.write(faces.tobytes())
