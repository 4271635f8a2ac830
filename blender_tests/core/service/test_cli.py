"""The command line `python -m neural_field_addon.core`, run as a real subprocess from the repo
root: fit, extract, eval and sdf on analytic and real meshes, bad input, and the import rules
(the core works without bpy; the add-on package imports neither torch nor bpy).

Bounds were measured on a 2-core CPU (torch 2.13, seed 0) with a 2-3x margin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from checks import REPO_ROOT, SHARED_MESHES, edge_face_counts, inscribed_gap, read_obj, write_obj
from neural_field_addon.core.geometry.procedural import icosphere, sphere_sdf, torus

# Small enough for a few seconds on two CPU cores; a low Fourier sigma so 200 steps leave no
# floaters in the corners of the box (the default 1.5 does at this length).
FIT_OPTIONS = [
    "--steps", "200", "--pool-size", "32768", "--batch", "4096",
    "--width", "64", "--fourier-sigma", "0.75", "--device", "cpu",
]
RESOLUTION = "64"
SAMPLES = "10000"


def run_cli(*args, check=True) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter from the repository root."""
    result = subprocess.run(
        [sys.executable, "-m", "neural_field_addon.core", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"CLI {args} failed ({result.returncode}):\n{result.stderr}")
    return result


def last_json_line(result: subprocess.CompletedProcess) -> dict:
    lines = result.stdout.strip().splitlines()
    assert lines, f"no stdout; stderr was:\n{result.stderr}"
    return json.loads(lines[-1])


def fit_extract_eval(mesh_path, folder) -> dict:
    field_path, surface_path = folder / "field.nfield", folder / "surface.obj"
    fit = run_cli("fit", mesh_path, "-o", field_path, *FIT_OPTIONS, "--json")
    extract = run_cli(
        "extract", field_path, "-o", surface_path, "--resolution", RESOLUTION, "--device", "cpu", "--json"
    )
    evaluate = run_cli("eval", mesh_path, surface_path, "--samples", SAMPLES, "--json")
    return {"fit": fit, "extract": extract, "eval": evaluate, "surface": surface_path, "field": field_path}


@pytest.fixture(scope="module")
def torus_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_torus")
    mesh_path = folder / "torus.obj"
    write_obj(mesh_path, *torus(1.0, 0.35))
    return fit_extract_eval(mesh_path, folder)


# ----------------------------------------------------------------------------- fit, extract, eval


def test_fit_prints_its_report_as_json_on_the_last_stdout_line(torus_run):
    report = last_json_line(torus_run["fit"])
    assert report["field"] == str(torus_run["field"])
    assert report["report"]["steps"] == 200
    assert report["report"]["source_faces"] == 4096
    assert os.path.isfile(torus_run["field"])


def test_fit_writes_the_surface_in_the_same_process_and_measures_it(tmp_path):
    mesh_path = tmp_path / "torus.obj"
    write_obj(mesh_path, *torus(1.0, 0.35))
    run = run_cli("fit", mesh_path, "-o", tmp_path / "f.nfield", *FIT_OPTIONS, "--extract", tmp_path / "s.obj",
                  "--resolution", RESOLUTION, "--json")
    report = last_json_line(run)
    assert report["mesh"] == str(tmp_path / "s.obj") and report["extract_seconds"] > 0
    vertices, faces = read_obj(tmp_path / "s.obj")
    assert len(faces) > 100
    assert report["metrics"]["chamfer_l1"] < 5e-3 and report["metrics"]["normal_consistency"] > 0.9


def test_a_fit_without_extraction_does_not_import_scikit_image(tmp_path):
    mesh_path = tmp_path / "torus.obj"
    write_obj(mesh_path, *torus(1.0, 0.35))
    code = ("import sys; from neural_field_addon.core.service import cli; "
            f"code = cli.main(['fit', {str(mesh_path)!r}, '-o', {str(tmp_path / 'f.nfield')!r}, '--steps', '5', "
            "'--device', 'cpu']); print('skimage' in sys.modules, code)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert out.stdout.split()[-2:] == ["False", "0"], out.stderr[-2000:]


def test_warmup_compiles_into_the_cache_once(tmp_path):
    environment = {**os.environ, "NEURAL_FIELD_CACHE": str(tmp_path / "cache")}
    first = subprocess.run([sys.executable, "-m", "neural_field_addon.core", "warmup", "--device", "cpu", "--json"],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=environment)
    again = subprocess.run([sys.executable, "-m", "neural_field_addon.core", "warmup", "--device", "cpu", "--json"],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, env=environment)
    assert last_json_line(first)["compiled"] > 0 and last_json_line(again)["compiled"] == 0


def test_extract_prints_json_and_writes_a_closed_mesh(torus_run):
    report = last_json_line(torus_run["extract"])
    vertices, faces = read_obj(torus_run["surface"])
    assert report["faces"] == len(faces) > 0
    assert report["vertices"] == len(vertices)
    assert np.all(edge_face_counts(faces) == 2)


def test_extract_dense_method_gives_the_adaptive_mesh(torus_run, tmp_path):
    dense_path = tmp_path / "dense.obj"
    report = last_json_line(run_cli(
        "extract", torus_run["field"], "-o", dense_path, "--resolution", RESOLUTION, "--method", "dense",
        "--device", "cpu", "--json",
    ))
    adaptive = last_json_line(torus_run["extract"])
    assert (report["method"], adaptive["method"]) == ("dense", "adaptive")
    assert (report["vertices"], report["faces"]) == (adaptive["vertices"], adaptive["faces"])
    assert report["evaluated"] == np.prod(report["samples"]) > adaptive["evaluated"]


def test_extract_with_normals_writes_unit_outward_vertex_normals(torus_run, tmp_path):
    path = tmp_path / "normals.obj"
    run_cli("extract", torus_run["field"], "-o", path, "--resolution", "32", "--normals", "--device", "cpu")
    lines = path.read_text().splitlines()
    vertices = np.array([[float(x) for x in line.split()[1:]] for line in lines if line.startswith("v ")])
    normals = np.array([[float(x) for x in line.split()[1:]] for line in lines if line.startswith("vn ")])
    assert normals.shape == vertices.shape
    assert np.allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    # Outward on a torus around z: away from the tube's centre circle.
    ring = vertices.copy()
    ring[:, 2] = 0.0
    ring *= 1.0 / np.linalg.norm(ring, axis=1, keepdims=True)
    assert np.mean(np.sum(normals * (vertices - ring), axis=1) > 0) > 0.99
    assert all(line.count("//") == 3 for line in lines if line.startswith("f "))


def test_compress_writes_a_field_within_its_bytes_that_extracts_like_any(torus_run, tmp_path):
    small = tmp_path / "small.nfield"
    result = last_json_line(run_cli("compress", torus_run["field"], "-o", small, "--bytes", "4000", "--steps", "200",
                                    "--device", "cpu", "--json"))
    assert small.stat().st_size <= 4000 and result["report"]["bytes"] == small.stat().st_size
    assert result["report"]["reference"] == "the teacher's surface" and result["report"]["chamfer_l1"] > 0
    surface = tmp_path / "small.obj"
    run_cli("extract", small, "-o", surface, "--resolution", RESOLUTION, "--device", "cpu")
    vertices, faces = read_obj(surface)
    assert len(faces) > 100


@pytest.mark.parametrize("args, message", [
    (["--bytes", "4000", "--chamfer", "1e-3"], "not allowed with argument"),
    (["--bytes", "100"], "below the smallest compressed field"),
    (["--chamfer", "2"], "chamfer must lie in"),
    (["--bytes", "4000", "--bits", "3"], "invalid choice"),
])
def test_compress_refuses_bad_targets_with_one_line(torus_run, tmp_path, args, message):
    result = run_cli("compress", torus_run["field"], "-o", tmp_path / "x.nfield", *args, "--device", "cpu",
                     check=False)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.nfield").exists()


def test_eval_of_the_fitted_torus_reports_chamfer_below_bound(torus_run):
    result = last_json_line(torus_run["eval"])
    # Measured 2.7e-4 of the diagonal.
    assert result["chamfer_l1"] < 7e-4
    assert result["samples"] == int(SAMPLES)


def test_human_readable_messages_go_to_stderr_not_stdout(torus_run):
    for step in ("fit", "extract", "eval"):
        assert len(torus_run[step].stdout.strip().splitlines()) == 1
        assert torus_run[step].stderr.strip()


def test_shared_spot_mesh_fits_extracts_and_evaluates_below_bound(tmp_path):
    spot = os.path.join(SHARED_MESHES, "spot.obj")
    if not os.path.isfile(spot):
        pytest.skip(f"shared test mesh not available: {spot}")
    run = fit_extract_eval(spot, tmp_path)
    _, faces = read_obj(run["surface"])
    assert np.all(edge_face_counts(faces) == 2)
    # Measured 4.7e-4 of the diagonal (Hausdorff 0.012).
    assert last_json_line(run["eval"])["chamfer_l1"] < 1.2e-3


def test_suzanne_from_blender_fits_extracts_and_evaluates_below_bound(tmp_path):
    bpy = pytest.importorskip("bpy")
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.mesh.primitive_monkey_add()
    mesh = bpy.context.active_object.data
    mesh.calc_loop_triangles()
    vertices = np.array([v.co[:] for v in mesh.vertices])
    faces = np.array([t.vertices[:] for t in mesh.loop_triangles])
    mesh_path = tmp_path / "suzanne.npz"
    np.savez(mesh_path, vertices=vertices, faces=faces)
    run = fit_extract_eval(mesh_path, tmp_path)
    # Suzanne is open (eye sockets) and has three bodies; the winding number still gives a
    # closed surface. Measured 1.5e-3 of the diagonal at these small settings.
    _, surface_faces = read_obj(run["surface"])
    assert np.all(edge_face_counts(surface_faces) == 2)
    assert last_json_line(run["eval"])["chamfer_l1"] < 3.5e-3


# ----------------------------------------------------------------------------- sdf


def test_sdf_is_negative_inside_positive_outside_and_close_to_the_analytic_sphere(tmp_path):
    radius = 0.8
    vertices, faces = icosphere(radius, subdivisions=3)
    write_obj(tmp_path / "sphere.obj", vertices, faces)
    rng = np.random.default_rng(21)
    directions = rng.normal(size=(600, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    lengths = np.concatenate([rng.uniform(0.0, 0.7, 300), rng.uniform(0.9, 2.0, 300)])
    points = directions * lengths[:, None]
    np.save(tmp_path / "points.npy", points)

    result = run_cli(
        "sdf", tmp_path / "sphere.obj", tmp_path / "points.npy", "-o", tmp_path / "sdf.npy",
        "--device", "cpu", "--json",
    )

    sdf = np.load(tmp_path / "sdf.npy")
    assert last_json_line(result)["points"] == 600
    assert np.all(sdf[:300] < 0.0) and np.all(sdf[300:] > 0.0)
    # The inscribed mesh is within 0.0036 of the sphere, which bounds the difference.
    assert np.max(np.abs(sdf - sphere_sdf(points, radius))) <= inscribed_gap(vertices, faces) + 1e-6


# ----------------------------------------------------------------------------- bad input


def test_missing_mesh_file_exits_non_zero_saying_not_found(tmp_path):
    result = run_cli("fit", tmp_path / "nowhere.obj", "-o", tmp_path / "f.nfield", check=False)
    assert result.returncode != 0
    assert "not found" in result.stderr


def test_garbage_mesh_file_exits_non_zero_with_a_message_not_a_traceback(tmp_path):
    path = tmp_path / "garbage.obj"
    path.write_bytes(np.random.default_rng(22).bytes(4096))
    result = run_cli("fit", path, "-o", tmp_path / "f.nfield", check=False)
    assert result.returncode != 0
    assert "cannot read mesh" in result.stderr
    assert "Traceback" not in result.stderr


def test_damaged_npz_mesh_exits_non_zero_with_a_message_not_a_traceback(tmp_path):
    path = tmp_path / "damaged.npz"
    path.write_bytes(b"PK\x03\x04" + np.random.default_rng(23).bytes(512))
    result = run_cli("fit", path, "-o", tmp_path / "f.nfield", check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr


def test_mesh_without_faces_exits_non_zero_saying_no_faces(tmp_path):
    path = tmp_path / "points_only.npz"
    np.savez(path, vertices=np.eye(3), faces=np.zeros((0, 3), dtype=np.int64))
    result = run_cli("fit", path, "-o", tmp_path / "f.nfield", check=False)
    assert result.returncode != 0
    assert "no faces" in result.stderr


def test_extracting_a_missing_field_file_exits_non_zero_saying_not_found(tmp_path):
    result = run_cli("extract", tmp_path / "nowhere.nfield", "-o", tmp_path / "out.obj", check=False)
    assert result.returncode != 0
    assert "not found" in result.stderr


# ----------------------------------------------------------------------------- import rules


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


BLOCK_BPY = """
import importlib.abc, sys

class BlockBpy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "bpy" or name.startswith("bpy."):
            raise ImportError("bpy is blocked in this test")
        return None

sys.meta_path.insert(0, BlockBpy())
"""


def test_core_and_all_its_modules_import_without_bpy():
    code = BLOCK_BPY + """
import importlib, json, pkgutil
try:
    import bpy
except ImportError:
    pass
else:
    raise SystemExit("the bpy block did not work")
import neural_field_addon.core as core
names = sorted(
    info.name for info in pkgutil.walk_packages(core.__path__, "neural_field_addon.core.")
    if not info.name.endswith("__main__")
)
for name in names:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != "triton":  # the CUDA kernels need Triton, which CPU PyTorch lacks
            raise
print(json.dumps(names))
"""
    result = _python(code)
    assert result.returncode == 0, result.stderr
    imported = set(json.loads(result.stdout.strip().splitlines()[-1]))
    expected = {
        "neural_field_addon.core." + name
        for name in (
            "service.cli", "config", "fields.encodings", "surface.extraction", "io.fieldfile", "geometry",
            "geometry.bruteforce", "geometry.query", "geometry.sampling", "io.meshio",
            "surface.metrics", "fields.networks", "fitting.fitter",
        )
    }
    assert expected <= imported


def test_importing_the_addon_package_does_not_import_torch():
    result = _python("import sys, neural_field_addon; print('torch' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_importing_the_addon_package_does_not_import_bpy():
    result = _python(BLOCK_BPY + "import neural_field_addon; print('imported')")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"


# ----------------------------------------------------------------------------- presets and kinds

TINY = ["--steps", "3", "--pool-size", "4096", "--batch", "512", "--device", "cpu"]


def test_fast_preset_writes_a_hash_grid_field_and_flags_override_it(tmp_path):
    from neural_field_addon.core.io.fieldfile import read_header

    mesh_path, field_path = tmp_path / "torus.obj", tmp_path / "fast.nfield"
    write_obj(mesh_path, *torus(1.0, 0.35, 24, 12))
    run_cli("fit", mesh_path, "-o", field_path, "--preset", "fast", "--hash-log2-size", "12", "--width", "32", *TINY)
    config = read_header(field_path)["field_config"]
    assert (config["encoding"], config["hash_levels"], config["hash_log2_size"], config["width"]) == (
        "hashgrid", 16, 12, 32)


def test_occupancy_fit_writes_an_occupancy_field_that_refuses_a_level(tmp_path):
    from neural_field_addon.core.io.fieldfile import read_header

    mesh_path, field_path = tmp_path / "torus.obj", tmp_path / "occupancy.nfield"
    write_obj(mesh_path, *torus(1.0, 0.35, 24, 12))
    run_cli("fit", mesh_path, "-o", field_path, "--kind", "occupancy", "--encoding", "siren", *TINY)
    header = read_header(field_path)
    assert header["field_config"]["kind"] == "occupancy" and header["report"]["kind"] == "occupancy"
    result = run_cli("extract", field_path, "-o", tmp_path / "s.obj", "--level", "0.1", "--device", "cpu",
                     check=False)
    assert result.returncode == 1
    assert "occupancy field has no distance scale" in result.stderr


def test_unknown_preset_is_a_usage_error(tmp_path):
    result = run_cli("fit", tmp_path / "missing.obj", "-o", tmp_path / "f.nfield", "--preset", "fastest",
                     check=False)
    assert result.returncode == 2
    assert "invalid choice: 'fastest'" in result.stderr


# ----------------------------------------------------------------------------- shape spaces

SPACE_OPTIONS = ["--steps", "150", "--pool-size", "16384", "--batch", "4096", "--width", "64", "--depth", "3",
                 "--latent-dim", "8", "--fourier-sigma", "0.75", "--device", "cpu"]
# The module's space has latent grids (the CUDA default), so extraction, blends and
# reconstruction below go through them; the mix-weight test's space has none.
GRID_OPTIONS = ["--latent-grid", "8"]


@pytest.fixture(scope="module")
def space_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_space")
    paths = []
    for name, minor in (("thin", 0.2), ("fat", 0.45)):
        paths.append(folder / f"{name}.obj")
        write_obj(paths[-1], *torus(1.0, minor))
    space_path = folder / "tori.nfield"
    fit = run_cli("fit-space", *paths, "-o", space_path, *SPACE_OPTIONS, *GRID_OPTIONS, "--json")
    return {"fit": fit, "space": space_path, "folder": folder}


def test_fit_space_reports_its_shapes_as_json(space_run):
    report = last_json_line(space_run["fit"])
    assert report["names"] == ["thin", "fat"]
    assert report["report"]["shapes"] == 2 and report["report"]["latent_dim"] == 8
    assert report["report"]["latent_grid"] == 8


def test_fit_space_trains_smooth_blends_unless_mix_weight_is_zero(space_run, tmp_path):
    plain = run_cli("fit-space", space_run["folder"] / "thin.obj", space_run["folder"] / "fat.obj",
                    "-o", tmp_path / "plain.nfield", *SPACE_OPTIONS, "--mix-weight", "0", "--json")
    assert last_json_line(space_run["fit"])["report"]["mix_weight"] == 0.25
    assert last_json_line(plain)["report"]["mix_weight"] == 0.0
    assert last_json_line(plain)["report"]["latent_grid"] == 0


@pytest.mark.parametrize("choice", [["--shape", "1"], ["--blend", "0=0.5,1=0.5"], ["--blend", "0=0.3,1=0.7", "--slerp"]])
def test_extract_from_a_space_writes_a_closed_mesh(space_run, choice):
    out = space_run["folder"] / "shape.obj"
    report = last_json_line(run_cli("extract", space_run["space"], "-o", out, "--resolution", "40", *choice,
                                    "--device", "cpu", "--json"))
    vertices, faces = read_obj(out)
    assert report["faces"] == len(faces) > 0
    assert np.all(edge_face_counts(faces) == 2)


def test_extract_from_a_space_without_a_choice_says_how_to_choose(space_run):
    result = run_cli("extract", space_run["space"], "-o", space_run["folder"] / "x.obj", check=False)
    assert result.returncode == 1
    assert "--shape I or --blend" in result.stderr


def test_fit_space_with_a_latent_grid_of_one_cell_is_refused(space_run, tmp_path):
    result = run_cli("fit-space", space_run["folder"] / "thin.obj", space_run["folder"] / "fat.obj",
                     "-o", tmp_path / "g.nfield", *SPACE_OPTIONS, "--latent-grid", "1", check=False)
    assert result.returncode == 1
    assert "latent_grid must be 0 (none) or lie in 2..128" in result.stderr
    assert not (tmp_path / "g.nfield").exists()


def test_fit_space_with_one_mesh_is_refused(space_run, tmp_path):
    result = run_cli("fit-space", space_run["folder"] / "thin.obj", "-o", tmp_path / "one.nfield", check=False)
    assert result.returncode == 1
    assert "at least two meshes" in result.stderr
    assert not (tmp_path / "one.nfield").exists()


def test_reconstruct_from_a_point_cloud_writes_a_closed_mesh(space_run):
    vertices, _ = torus(1.0, 0.3)
    points_path = space_run["folder"] / "upper.npz"
    np.savez(points_path, points=vertices[vertices[:, 2] > 0])
    out = space_run["folder"] / "completed.obj"
    report = last_json_line(run_cli("reconstruct", space_run["space"], points_path, "-o", out, "--steps", "50",
                                    "--resolution", "40", "--device", "cpu", "--json"))
    _, faces = read_obj(out)
    assert report["input"] == "points" and report["faces"] == len(faces) > 0
    assert np.all(edge_face_counts(faces) == 2)


def test_reconstruct_with_a_single_field_instead_of_a_space_names_the_problem(torus_run, tmp_path):
    result = run_cli("reconstruct", torus_run["field"], torus_run["surface"], "-o", tmp_path / "r.obj", check=False)
    assert result.returncode == 1
    assert "single field, not a shape space" in result.stderr
