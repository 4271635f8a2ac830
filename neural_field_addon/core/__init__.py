"""Training core: no bpy here."""
