"""The colour of a source mesh's surface, as a value the fitter and the metrics read.

Every face has three corner colours (linear RGB): vertex colours, corner colours and per-material
Base Color values all become these. A face may instead read an image texture through its corners'
UVs (`face_texture` >= 0), as an Image Texture node or an MTL `map_Kd` does. A colour at a point
of a face is the barycentric blend of its corners, or the texture bilinearly sampled at the
blended UV, wrapping around (Blender's Repeat extension).

Texture images are (H, W, 3) float32 linear RGB with row 0 at the top (v = 1), as image files
store them; Blender's `Image.pixels` start at the bottom and are flipped on the way in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Texture:
    """An image in linear RGB, (H, W, 3) float32, row 0 at the top; `name` says where it came from."""

    pixels: np.ndarray
    name: str = ""

    def __post_init__(self):
        pixels = np.asarray(self.pixels, dtype=np.float32)
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.shape[0] < 1 or pixels.shape[1] < 1:
            raise ValueError(f"texture {self.name or ''} must be an (H, W, 3) image, got {pixels.shape}".replace("  ", " "))
        if not np.all(np.isfinite(pixels)):
            raise ValueError(f"texture {self.name} holds NaN or infinite values")
        object.__setattr__(self, "pixels", np.ascontiguousarray(np.clip(pixels, 0.0, 1.0)))


@dataclass(frozen=True)
class SurfaceColors:
    """Colours of the m faces of a mesh: corner colours (m, 3, 3), and optionally per-corner UVs
    (m, 3, 2) with the index of the texture each face reads (m,; -1 for its corner colours)."""

    corner_colors: np.ndarray
    corner_uvs: np.ndarray | None = None
    face_texture: np.ndarray | None = None
    textures: tuple = ()

    def __post_init__(self):
        colors = np.asarray(self.corner_colors, dtype=np.float32)
        if colors.ndim != 3 or colors.shape[1:] != (3, 3):
            raise ValueError(f"corner colours must have shape (faces, 3, 3), got {colors.shape}")
        bad = ~np.all(np.isfinite(colors), axis=2)
        if bad.any():
            raise ValueError(f"the colours hold NaN or infinite values at {int(bad.sum())} corners "
                             f"of {int(bad.any(axis=1).sum())} faces")
        object.__setattr__(self, "corner_colors", np.clip(colors, 0.0, 1.0))
        textures = tuple(self.textures)
        object.__setattr__(self, "textures", textures)
        if textures:
            if self.corner_uvs is None or self.face_texture is None:
                raise ValueError("textured colours need corner UVs and the texture of each face")
            uvs = np.asarray(self.corner_uvs, dtype=np.float32)
            if uvs.shape != (len(colors), 3, 2):
                raise ValueError(f"corner UVs must have shape ({len(colors)}, 3, 2), got {uvs.shape}")
            if not np.all(np.isfinite(uvs)):
                raise ValueError("the UVs hold NaN or infinite values")
            face_texture = np.asarray(self.face_texture).astype(np.int32)
            if face_texture.shape != (len(colors),) or face_texture.min() < -1 or face_texture.max() >= len(textures):
                raise ValueError(f"face textures must be {len(colors)} indices in -1..{len(textures) - 1}")
            object.__setattr__(self, "corner_uvs", uvs)
            object.__setattr__(self, "face_texture", face_texture)
        else:
            object.__setattr__(self, "corner_uvs", None)
            object.__setattr__(self, "face_texture", None)

    @property
    def face_count(self) -> int:
        return len(self.corner_colors)

    @property
    def textured(self) -> bool:
        return bool(self.textures)

    def check(self, mesh) -> "SurfaceColors":
        """These colours, if they describe `mesh`'s faces; a clear error otherwise."""
        if self.face_count != len(mesh.faces):
            raise ValueError(f"the colours describe {self.face_count} faces, the mesh has {len(mesh.faces)}")
        return self

    @classmethod
    def from_vertex_colors(cls, faces: np.ndarray, colors: np.ndarray) -> "SurfaceColors":
        """Per-vertex linear colours (n, 3) (a fourth, alpha, column is dropped)."""
        colors = _rgb(colors, "vertex colours")
        faces = np.asarray(faces, dtype=np.int64)
        if faces.size and faces.max() >= len(colors):
            raise ValueError(f"{len(colors)} vertex colours for faces that index {int(faces.max()) + 1} vertices")
        return cls(colors[faces])

    @classmethod
    def from_face_colors(cls, colors: np.ndarray) -> "SurfaceColors":
        """One linear colour per face (m, 3): materials' Base Colors, MTL Kd."""
        colors = _rgb(colors, "face colours")
        return cls(np.repeat(colors[:, None, :], 3, axis=1))

    def subset(self, faces: np.ndarray) -> "SurfaceColors":
        """The colours of the faces `faces` (indices or a mask), in that order."""
        return SurfaceColors(self.corner_colors[faces],
                             None if self.corner_uvs is None else self.corner_uvs[faces],
                             None if self.face_texture is None else self.face_texture[faces], self.textures)

    def colors_at(self, face: np.ndarray, barycentric: np.ndarray) -> np.ndarray:
        """Linear colours (q, 3) at points of faces `face` (q,) with barycentric weights (q, 3)."""
        import torch

        device = DeviceColors(self, "cpu")
        return device.at(torch.as_tensor(np.asarray(face, dtype=np.int64)),
                         torch.as_tensor(np.asarray(barycentric, dtype=np.float32))).numpy()


def _rgb(colors, what: str) -> np.ndarray:
    colors = np.asarray(colors, dtype=np.float32)
    if colors.ndim != 2 or colors.shape[1] not in (3, 4):
        raise ValueError(f"{what} must have shape (n, 3) or (n, 4), got {colors.shape}")
    return colors[:, :3]


class DeviceColors:
    """SurfaceColors as tensors on a device, evaluated where the fitter's points are."""

    def __init__(self, colors: SurfaceColors, device):
        import torch

        self.device = torch.device(device)
        self.corner_colors = torch.as_tensor(colors.corner_colors, device=self.device)
        self.textures = [torch.as_tensor(t.pixels, device=self.device) for t in colors.textures]
        if self.textures:
            self.corner_uvs = torch.as_tensor(colors.corner_uvs, device=self.device)
            self.face_texture = torch.as_tensor(colors.face_texture, dtype=torch.long, device=self.device)

    def at(self, face, barycentric):
        """Linear colours (q, 3) at faces `face` (q,) and barycentric weights (q, 3)."""
        weights = barycentric.to(self.corner_colors.dtype)[:, :, None]
        out = (self.corner_colors[face] * weights).sum(dim=1)
        for index, pixels in enumerate(self.textures):
            reads = self.face_texture[face] == index
            if bool(reads.any()):
                uv = (self.corner_uvs[face[reads]] * weights[reads]).sum(dim=1)
                out[reads] = sample_bilinear(pixels, uv)
        return out


def sample_bilinear(pixels, uv):
    """Bilinear samples (q, C) of an image (H, W, C) (row 0 at the top) at UVs (q, 2), pixel
    centres at ((i + 0.5) / W, 1 - (j + 0.5) / H), wrapping around at the edges."""
    import torch

    height, width = pixels.shape[0], pixels.shape[1]
    x = uv[:, 0].double() * width - 0.5
    y = (1.0 - uv[:, 1].double()) * height - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0).to(pixels.dtype)[:, None], (y - y0).to(pixels.dtype)[:, None]
    x0, y0 = x0.long() % width, y0.long() % height
    x1, y1 = (x0 + 1) % width, (y0 + 1) % height
    top = pixels[y0, x0] * (1 - fx) + pixels[y0, x1] * fx
    bottom = pixels[y1, x0] * (1 - fx) + pixels[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def barycentric_of(points, triangles):
    """Barycentric weights (q, 3) of points (q, 3) that lie on triangles (q, 3, 3) (closest
    points), clamped onto the triangle so rounding never reads outside it."""
    import torch

    a, b, c = triangles[:, 0], triangles[:, 1], triangles[:, 2]
    v0, v1, v2 = b - a, c - a, points - a
    d00, d01, d11 = (v0 * v0).sum(-1), (v0 * v1).sum(-1), (v1 * v1).sum(-1)
    d20, d21 = (v2 * v0).sum(-1), (v2 * v1).sum(-1)
    denominator = d00 * d11 - d01 * d01
    safe = torch.where(denominator.abs() > 0, denominator, torch.ones_like(denominator))
    v = torch.where(denominator.abs() > 0, (d11 * d20 - d01 * d21) / safe, torch.zeros_like(d00))
    w = torch.where(denominator.abs() > 0, (d00 * d21 - d01 * d20) / safe, torch.zeros_like(d00))
    weights = torch.stack([1.0 - v - w, v, w], dim=-1).clamp(min=0.0)
    return weights / weights.sum(dim=-1, keepdim=True).clamp(min=1e-12)


# The arrays a coloured mesh's NPZ holds beside `vertices` and `faces`: per-vertex `colors`
# (n, 3|4: float linear, or uint8 sRGB), or `corner_colors` (m, 3, 3) linear with `corner_uvs`
# (m, 3, 2), `face_texture` (m,) and `texture_0`, `texture_1`, ... (H, W, 3) linear, row 0 at the
# top (what the add-on writes); or per-vertex `uvs` (n, 2) with one `texture` (what meshio writes).
COLOR_ARRAYS = ("colors", "corner_colors", "corner_uvs", "face_texture", "uvs", "texture")


def colors_to_arrays(colors: SurfaceColors) -> dict:
    """The NPZ arrays of `colors` (see COLOR_ARRAYS)."""
    arrays = {"corner_colors": colors.corner_colors}
    if colors.textured:
        arrays["corner_uvs"] = colors.corner_uvs
        arrays["face_texture"] = colors.face_texture
        for index, texture in enumerate(colors.textures):
            arrays[f"texture_{index}"] = texture.pixels
    return arrays


def colors_from_arrays(arrays, faces: np.ndarray) -> SurfaceColors | None:
    """The colours an NPZ's arrays describe for `faces` (None if it holds none)."""
    from .colorspace import srgb_to_linear

    names = set(arrays.keys()) if hasattr(arrays, "keys") else set(arrays.files)
    if "corner_colors" in names:
        textures = []
        while f"texture_{len(textures)}" in names:
            textures.append(Texture(np.asarray(arrays[f"texture_{len(textures)}"]), name=f"texture_{len(textures)}"))
        return SurfaceColors(np.asarray(arrays["corner_colors"]),
                             np.asarray(arrays["corner_uvs"]) if "corner_uvs" in names else None,
                             np.asarray(arrays["face_texture"]) if "face_texture" in names else None,
                             tuple(textures))
    vertex_colors = None
    if "colors" in names:
        colors = np.asarray(arrays["colors"])
        if colors.dtype == np.uint8:
            colors = srgb_to_linear(colors.astype(np.float32) / 255.0)
        vertex_colors = SurfaceColors.from_vertex_colors(faces, colors)
    if "texture" in names and "uvs" in names:  # what meshio writes for a textured mesh
        faces = np.asarray(faces, dtype=np.int64)
        corner_colors = vertex_colors.corner_colors if vertex_colors is not None else np.ones((len(faces), 3, 3))
        return SurfaceColors(corner_colors, np.asarray(arrays["uvs"], dtype=np.float32)[faces],
                             np.zeros(len(faces), dtype=np.int32), (Texture(np.asarray(arrays["texture"]), "texture"),))
    return vertex_colors
