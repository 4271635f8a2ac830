"""Image files: textures read with Pillow into linear RGB, and PNGs written with NumPy and zlib.

Reading: 8- and 16-bit PNG, JPEG, TGA, BMP, TIFF; grey and palette images become RGB, alpha is
ignored (a straight-alpha file's colour is its RGB, as Blender's Image Texture Color output),
integer images are sRGB-encoded and converted to linear, 32-bit float images are taken as linear.
Pillow reads 16-bit RGB PNGs at 8 bits per channel: a quantisation (about 59 dB) far below any
fitted colour's error, so it is accepted rather than refused.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np

from ..appearance.colorspace import srgb_to_linear, to_bytes
from ..appearance.surface_colors import Texture


def read_texture(path: str | os.PathLike) -> Texture:
    """A texture from an image file; FileNotFoundError or ValueError naming the file otherwise."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as error:  # Pillow comes with scikit-image
        raise ValueError(f"cannot read image {path}: the Pillow package is not installed") from error
    try:
        with Image.open(path) as image:
            image.load()
            return Texture(_linear_pixels(image), name=os.path.basename(path))
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ValueError(f"cannot read image {path}: {error}") from error


def _linear_pixels(image) -> np.ndarray:
    if image.mode in ("F", "I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(image).astype(np.float32)
        if image.mode != "F":
            top = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
            pixels = srgb_to_linear(pixels / top)
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGBA" if "A" in image.mode or image.mode == "P" else "RGB")
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return srgb_to_linear(pixels[:, :, :3].astype(np.float32) / 255.0)


def write_png(path: str, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) uint8 image as an 8-bit RGB PNG, atomically."""
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    height, width = rgb.shape[:2]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = np.concatenate([np.zeros((height, 1), dtype=np.uint8), rgb.reshape(height, -1)], axis=1)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
    data += chunk(b"IEND", b"")
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def write_texture(path: str, texture: Texture) -> None:
    """A texture as an 8-bit sRGB PNG."""
    write_png(path, to_bytes(texture.pixels))
