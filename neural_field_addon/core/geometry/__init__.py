"""Mesh arrays, normalisation, surface sampling, exact distance and winding numbers."""

from .mesh import FieldTransform, TriangleMesh
from .query import INSIDE_WINDING, MeshQuery
from .sampling import DeviceSampler, sample_surface, sample_surface_barycentric

__all__ = [
    "DeviceSampler",
    "FieldTransform",
    "INSIDE_WINDING",
    "MeshQuery",
    "TriangleMesh",
    "sample_surface",
    "sample_surface_barycentric",
]
