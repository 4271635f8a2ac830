"""Redrawing Blender's areas from timers and modal handlers, which change what a panel shows
without the mouse event that would otherwise redraw it."""

from __future__ import annotations

import bpy


def redraw_areas(area_type: str) -> None:
    """Tag every area of a type (VIEW_3D, PREFERENCES) in every window for redraw: progress that
    a timer or modal handler updates shows without waiting for the next mouse event."""
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == area_type:
                area.tag_redraw()
