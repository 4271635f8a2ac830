"""The task layer: the command line and the worker turn their inputs into the same typed tasks and
run them with the same functions, so they accept and refuse the same things. Two drifts they had
are gone: the worker's extract of a shape space without a choice (it used shape 0 where the CLI
refused), and the occupancy-with-level check that only the worker's fit made."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from checks import REPO_ROOT
from neural_field_addon.blender.jobs import WorkerJob
from neural_field_addon.core.config import FieldConfig
from neural_field_addon.core.fields.networks import FieldNetwork
from neural_field_addon.core.fields.shapespace import ShapeSpace
from neural_field_addon.core.geometry import FieldTransform
from neural_field_addon.core.io.fieldfile import save_space
from neural_field_addon.core.service.cli import build_parser, task_from_args
from neural_field_addon.core.service.tasks import (
    TASKS,
    ExtractSettings,
    ExtractTask,
    FitSpaceTask,
    FitTask,
    ReconstructTask,
    task_from_dict,
)


@pytest.fixture(scope="module")
def space_file(tmp_path_factory):
    """A shape space of two shapes whose decoder is set by hand, not fitted: |x| + |y| + |z| - 0.5
    whatever the code (six ReLU units read the raw coordinates the encoding passes on)."""
    config = FieldConfig(width=8, depth=1, fourier_features=4, latent_dim=4, activation="relu")
    network = FieldNetwork(config)
    with torch.no_grad():
        hidden, head = network.hidden[0], network.head
        hidden.weight.zero_(), hidden.bias.zero_(), head.weight.zero_()
        for unit in range(6):
            hidden.weight[unit, unit // 2] = 1.0 if unit % 2 == 0 else -1.0
        head.weight[0, :6] = 1.0
        head.bias.fill_(-0.5)
    transforms = [FieldTransform(center=np.zeros(3), scale=1.0)] * 2
    space = ShapeSpace(config=config, network=network, codes=torch.randn(2, 4) * 0.01,
                       names=["a", "b"], transforms=transforms, box_low=np.full(3, -1.1), box_high=np.full(3, 1.1))
    path = tmp_path_factory.mktemp("space") / "two.nfield"
    save_space(path, space)
    return str(path)


def run_job(tasks: list[dict]) -> list[dict]:
    job = WorkerJob()
    try:
        for task in tasks:
            job.add_task(task)
        job.start()
        messages = []
        while not job.done:
            messages.extend(job.wait_messages(timeout=0.5))
        return messages
    finally:
        job.cleanup()


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "neural_field_addon.core", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)


def test_the_worker_refuses_a_space_extract_without_a_choice_as_the_cli_does(space_file, tmp_path):
    [error] = [m for m in run_job([{"type": "extract", "field_path": space_file, "mesh_out": str(tmp_path / "w.npz"),
                                     "resolution": 16, "device": "cpu"}]) if m["type"] == "error"]
    cli = run_cli("extract", space_file, "-o", tmp_path / "c.obj", "--resolution", "16", "--device", "cpu")
    assert cli.returncode == 1
    assert "is a shape space: give --shape I or --blend" in error["message"]
    assert error["message"] in cli.stderr
    assert not (tmp_path / "w.npz").exists() and not (tmp_path / "c.obj").exists()


def test_the_worker_extracts_a_chosen_shape_of_a_space(space_file, tmp_path):
    messages = run_job([{"type": "extract", "field_path": space_file, "mesh_out": str(tmp_path / "b.npz"),
                         "resolution": 16, "device": "cpu", "shape": 1}])
    [result] = [m for m in messages if m["type"] == "result"]
    assert result["faces"] > 0 and os.path.isfile(result["mesh_out"])


def test_an_occupancy_fit_with_a_level_is_refused_by_the_task_itself():
    with pytest.raises(ValueError, match="occupancy field has no distance scale"):
        FitTask(mesh="m.npz", field_path="f.nfield", field_config={"kind": "occupancy"},
                extract=ExtractSettings(level=0.05), mesh_out="o.npz")
    FitTask(mesh="m.npz", field_path="f.nfield", field_config={"kind": "occupancy"}, extract=ExtractSettings(),
            mesh_out="o.npz")  # level 0 is the surface of an occupancy field


def test_cli_and_job_file_give_the_same_task():
    args = build_parser().parse_args(["extract", "space.nfield", "-o", "out.obj", "--blend", "0=0.25,1=0.75",
                                      "--slerp", "--resolution", "64", "--device", "cpu"])
    from_cli = task_from_args(args)
    from_json = task_from_dict(json.loads(json.dumps(from_cli.to_dict())))
    assert from_json == from_cli
    assert from_cli.blend == {0: 0.25, 1: 0.75} and from_cli.slerp


@pytest.mark.parametrize("kind", sorted(TASKS))
def test_unknown_task_settings_are_refused(kind):
    with pytest.raises(ValueError, match=f"unknown {kind} task settings: colour"):
        task_from_dict({"type": kind, "colour": "red"})


def test_unknown_config_settings_are_refused_before_anything_runs():
    with pytest.raises(ValueError, match="unknown FieldConfig settings: widht"):
        FitTask(mesh="m.npz", field_path="f.nfield", field_config={"widht": 64})


def test_an_unknown_task_type_is_refused():
    with pytest.raises(ValueError, match="unknown task type 'render'"):
        task_from_dict({"type": "render"})


def test_a_space_needs_two_meshes_and_a_mesh_out_for_each_extracted_shape():
    with pytest.raises(ValueError, match="at least two meshes; 1 given"):
        FitSpaceTask(meshes=("a.npz",), space_path="s.nfield")
    with pytest.raises(ValueError, match="one mesh_out per mesh"):
        FitSpaceTask(meshes=("a.npz", "b.npz"), space_path="s.nfield", extract=ExtractSettings(), mesh_out=("a",))


def test_bad_values_name_the_setting():
    with pytest.raises(ValueError, match="steps must be at least 1, got 0"):
        ReconstructTask(space_path="s.nfield", input="i.npz", mesh_out="o.npz", steps=0)
    with pytest.raises(ValueError, match="method must be one of adaptive, dense"):
        ExtractTask(field_path="f.nfield", mesh_out="o.obj", method="octree")
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
        ExtractTask(field_path="f.nfield", mesh_out="o.obj", device="gpu")


def test_relative_paths_are_taken_from_the_job_folder():
    task = FitSpaceTask(meshes=("a.npz", "/abs/b.npz"), space_path="s.nfield").relative_to("/job")
    assert task.meshes == (os.path.join("/job", "a.npz"), "/abs/b.npz")
    assert task.space_path == os.path.join("/job", "s.nfield")


def test_a_cpu_run_of_a_task_changes_only_its_device():
    task = FitTask(mesh="m.npz", field_path="f.nfield", train_config={"device": "cuda", "steps": 5})
    assert task.on_cpu().train_config == {"device": "cpu", "steps": 5}
    assert ExtractTask(field_path="f", mesh_out="o", device="cuda").on_cpu().device == "cpu"


def test_colour_and_texture_settings_are_checked_when_a_task_is_made():
    from neural_field_addon.core.service.tasks import BakeTask, task_from_dict

    with pytest.raises(ValueError, match="texture must be 0"):
        ExtractTask(field_path="f.nfield", mesh_out="m.obj", texture=4)
    with pytest.raises(ValueError, match="color must be true, false or null"):
        FitTask(mesh="m.obj", field_path="f.nfield", color="yes")
    with pytest.raises(ValueError, match="texture size of at least 8"):
        BakeTask(field_path="f.nfield", mesh="m.npz", image_out="t.png", size=0)
    bake = task_from_dict({"type": "bake", "field_path": "f.nfield", "mesh": "m.npz", "image_out": "t.png",
                           "size": 512, "blend": {"0": 0.5, "1": 0.5}})
    assert bake.blend == {0: 0.5, 1: 0.5} and task_from_dict(bake.to_dict()) == bake
    with pytest.raises(ValueError, match="unknown bake task settings: colour"):
        task_from_dict({"type": "bake", "field_path": "f", "mesh": "m", "image_out": "t", "colour": True})
