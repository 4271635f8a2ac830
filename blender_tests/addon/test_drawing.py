"""The panel and the preferences draw without errors in every state a user meets (idle, a field
object, a shape-space object, a loss curve present, a job running, a missing field file), and
every property and operator they show exists. Headless Blender has no UI, so each draw() gets a
recording stand-in for bpy.types.UILayout that checks what it is asked to show."""

from __future__ import annotations

import importlib
import os

import pytest

bpy = pytest.importorskip("bpy")

PACKAGE = "bl_ext.user_default.neural_field_addon"


class RecordingLayout:
    """Stands in for UILayout: records labels, checks props and operators exist."""

    def __init__(self, record=None):
        self.record = record if record is not None else {"labels": [], "props": [], "operators": [], "progress": []}
        self.enabled = True
        self.active = True

    def _child(self, *args, **kwargs):
        return RecordingLayout(self.record)

    row = column = box = split = _child

    def label(self, text="", icon="NONE", **_):
        self.record["labels"].append(text)

    def prop(self, data, name, **_):
        assert name in data.bl_rna.properties, f"{type(data).__name__} has no property {name!r}"
        self.record["props"].append(name)

    def operator(self, idname, **_):
        group, name = idname.split(".")
        getattr(getattr(bpy.ops, group), name).get_rna_type()  # raises if there is no such operator
        self.record["operators"].append(idname)
        return type("OperatorProperties", (), {})()

    def progress(self, factor=0.0, type="BAR", text=""):
        assert 0.0 <= factor <= 1.0
        self.record["progress"].append(text)

    def template_icon(self, icon_value=0, scale=1.0):
        assert isinstance(icon_value, int)  # 0 headless: previews are made by the UI's icon loader
        self.record["labels"].append("<icon>")


class _Drawn:
    """`self` for a draw(): the layout plus the real object's attributes."""

    def __init__(self, target, layout):
        self.__dict__["_target"], self.__dict__["layout"] = target, layout

    def __getattr__(self, name):
        return getattr(self._target, name)


def _draw_panel():
    panel = importlib.import_module(f"{PACKAGE}.blender.panel")
    layout = RecordingLayout()
    panel.VIEW3D_PT_neural_field.draw(_Drawn(panel.VIEW3D_PT_neural_field, layout), bpy.context)
    network = RecordingLayout()
    panel.VIEW3D_PT_neural_field_network.draw(_Drawn(panel.VIEW3D_PT_neural_field_network, network), bpy.context)
    return layout.record


@pytest.fixture(scope="module")
def fitted(addon):
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.mesh.primitive_torus_add(major_radius=1.0, minor_radius=0.3)
    bpy.ops.mesh.primitive_torus_add(major_radius=0.8, minor_radius=0.45, location=(3, 0, 0))
    for obj in bpy.data.objects:
        obj.select_set(True)
    settings = bpy.context.scene.neural_field
    settings.space_steps, settings.resolution, settings.device = 30, 24, "CPU"
    assert bpy.ops.neural_field.fit_shape_space() == {"FINISHED"}
    return bpy.data.objects["Torus.field"]


def test_the_panel_draws_a_shape_space_object_with_its_slider_and_the_loss_curve(fitted):
    bpy.context.view_layer.objects.active = fitted
    record = _draw_panel()
    assert {"shape_a", "shape_b", "mix", "live_preview"} <= set(record["props"])
    assert "neural_field.show_loss_curve" in record["operators"]
    assert "Shape space: 2 shapes" in record["labels"]


def test_the_panel_draws_progress_while_a_job_runs(fitted):
    driver = importlib.import_module(f"{PACKAGE}.blender.driver")
    jobs = importlib.import_module(f"{PACKAGE}.blender.jobs")
    driver.STATE.begin(jobs.WorkerJob())
    try:
        driver.STATE.progress, driver.STATE.status = 0.4, "Training 40/100, loss 1.00e-02"
        record = _draw_panel()
    finally:
        driver.STATE.end()
    assert record["progress"] == ["Training 40/100, loss 1.00e-02"]
    assert "neural_field.cancel" in record["operators"]


def test_the_panel_names_a_missing_field_file_and_offers_locate(fitted, tmp_path):
    bpy.context.view_layer.objects.active = fitted
    saved = fitted.neural_field.field_path
    fitted.neural_field.field_path = str(tmp_path / "gone.nfield")
    try:
        record = _draw_panel()
    finally:
        fitted.neural_field.field_path = saved
    assert any(label.startswith("Field file missing") for label in record["labels"])
    assert "neural_field.locate_field" in record["operators"]


def test_the_preferences_draw_the_found_line_and_the_install_button(addon):
    dependencies = importlib.import_module(f"{PACKAGE}.blender.dependencies")
    assert bpy.ops.neural_field.check_dependencies() == {"FINISHED"}
    prefs = bpy.context.preferences.addons[PACKAGE].preferences
    layout = RecordingLayout()
    type(prefs).draw(_Drawn(prefs, layout), bpy.context)
    record = layout.record
    assert {"device", "cpu_fallback", "gpu_memory_limit", "fields_folder", "python_path", "wheel_folder"} <= \
        set(record["props"])
    assert "neural_field.install_dependencies" in record["operators"]
    assert f"Found: {dependencies.found_text()}" in record["labels"]
    assert any(label.startswith("Dependency folder: ") and os.path.isabs(label.split(": ", 1)[1])
               for label in record["labels"])


def test_the_network_panel_draws_the_settings_of_every_encoding(addon):
    panel = importlib.import_module(f"{PACKAGE}.blender.panel")
    settings = bpy.context.scene.neural_field
    settings.preset = "CUSTOM"
    shown = {}
    try:
        for encoding in ("HASHGRID", "FOURIER", "SIREN", "POSITIONAL"):
            settings.encoding = encoding
            layout = RecordingLayout()
            panel.VIEW3D_PT_neural_field_network.draw(_Drawn(panel.VIEW3D_PT_neural_field_network, layout),
                                                       bpy.context)
            shown[encoding] = set(layout.record["props"])
    finally:
        settings.preset = "AUTO"
    assert "hash_log2_size" in shown["HASHGRID"] and "fourier_sigma" in shown["FOURIER"]
    assert "siren_omega" in shown["SIREN"] and "pe_frequencies" in shown["POSITIONAL"]
