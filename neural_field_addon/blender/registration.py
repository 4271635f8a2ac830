"""register()/unregister(): classes in order (the property groups before what uses them, a parent
panel before its child), properties attached to Scene and Object, and the handlers of the live
preview and of field storage; the warm worker started soon after (never during) register, and
stopped with unregister."""

from __future__ import annotations

import bpy

from . import dependencies, driver, jobs, live, operators, panel, preferences, properties, storage

CLASSES = (
    properties.NeuralFieldSceneSettings,
    properties.NeuralFieldObjectSettings,
    preferences.NeuralFieldPreferences,
    operators.NEURAL_FIELD_OT_fit,
    operators.NEURAL_FIELD_OT_fit_shape_space,
    operators.NEURAL_FIELD_OT_extract,
    operators.NEURAL_FIELD_OT_bake_texture,
    operators.NEURAL_FIELD_OT_reconstruct,
    operators.NEURAL_FIELD_OT_compress,
    operators.NEURAL_FIELD_OT_locate_field,
    operators.NEURAL_FIELD_OT_cancel,
    operators.NEURAL_FIELD_OT_show_loss_curve,
    dependencies.NEURAL_FIELD_OT_install_dependencies,
    dependencies.NEURAL_FIELD_OT_check_dependencies,
    panel.VIEW3D_PT_neural_field,
    panel.VIEW3D_PT_neural_field_network,
)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.neural_field = bpy.props.PointerProperty(type=properties.NeuralFieldSceneSettings)
    bpy.types.Object.neural_field = bpy.props.PointerProperty(type=properties.NeuralFieldObjectSettings)
    live.register()
    storage.register()
    if not bpy.app.background:  # a worker warming up while the artist looks around, never in the way of start
        bpy.app.timers.register(_prewarm, first_interval=2.0)


def _prewarm():
    try:
        driver.prewarm()
    except Exception as error:  # noqa: BLE001 - a timer must not raise; the first job will say what is wrong
        print(f"Neural Field: could not start the worker: {error}")
    return None


def unregister():
    if bpy.app.timers.is_registered(_prewarm):
        bpy.app.timers.unregister(_prewarm)
    jobs.shutdown_worker()
    panel.unregister()
    storage.unregister()
    live.unregister()
    del bpy.types.Object.neural_field
    del bpy.types.Scene.neural_field
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
