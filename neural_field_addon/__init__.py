"""Neural Field: fit neural implicit fields to meshes and extract them at any resolution.

Registration only. bpy is imported inside register()/unregister() so that
`python -m neural_field_addon.core` works in a Python without Blender, and neither torch nor
the training core is imported here, so enabling the add-on costs Blender no start-up time.
"""


def register():
    from .blender import registration

    registration.register()


def unregister():
    from .blender import registration

    registration.unregister()
