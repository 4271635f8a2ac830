"""Side networks: which side of an open sheet a point is on, beside a shell's distance field.

A shell field is an unsigned distance less half the thickness; its sheet, the zero set of the
distance, has no sign to march on. The side network (config.side_config) is a point's offset
along the normal of its closest face of the consistently oriented source (geometry/sides.py:
continuous, where the distance signed by the side jumps past a boundary), trained on points near
the sheet only. Regressed like a distance, its zero lies on the sheet to a distance field's
precision, where a classifier's soft step (tried first) was right only five times in six a voxel
off the sheet. The sheet extraction (surface/sheet.py) marches the shell's distance signed by it;
its zero also runs along a face's extension past a boundary, which the extraction trims.
"""

from __future__ import annotations

from ..config import FieldConfig
from .networks import FieldNetwork


def side_network(config: FieldConfig) -> FieldNetwork:
    return FieldNetwork(config)
