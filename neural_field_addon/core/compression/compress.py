"""Compress for delivery: a field (or a mesh) as a small network at a byte or fidelity target.

A fitted field spends its bytes on speed (a Fast hash grid is megabytes) and a mesh on its
triangles; what a delivered asset needs is its surface in the fewest bytes. The student is a
small SIREN (Sitzmann et al. 2020; small overfitted networks beat decimation as lossy shape
compressors, Davies et al. 2020) sized from the byte budget, fitted to the teacher's own values
(distillation: points near the teacher's surface and in its box, labelled by the teacher) or to a
mesh's exact distances, then fine-tuned through the quantiser (compression/quantization.py) and
stored packed: `bits`-bit block-scaled integers behind LZMA (io/codecs.py). A byte target is met
by construction (the packed bytes are counted, and a student over budget is refitted smaller); a
Chamfer target by searching the budget ladder.

A shape space compresses as one: its shared decoder, every code and latent grid stored at the
fewest bits that meet the target, so a library still has one decoder (`compress_space`)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import torch

from ..config import COMPRESS_BITS, COMPRESS_DEFAULT_BITS, FieldConfig, TrainConfig
from ..devices import resolve_device
from ..fields.field import NeuralField
from ..fields.networks import FieldNetwork, parameter_count
from ..fitting.fitter import FieldFitter
from ..geometry import DeviceSampler, TriangleMesh
from ..geometry.bvh import morton_order_tensor
from ..io.codecs import BLOCK, SMALL_ARRAY
from ..io.fieldfile import field_content, load_content, space_content
from ..surface.extraction import extract_isosurface
from ..surface.metrics import compare_meshes
from .quantization import finish_quantized_training, start_quantized_training

DEFAULT_BITS = COMPRESS_DEFAULT_BITS
BITS_CHOICES = COMPRESS_BITS
CODEC = "lzma"
# Training per student: float steps and batch by device (the GPU's 12k steps take 5-15 s).
STEPS = {"cuda": 12_000, "cpu": 6_000}
BATCH = {"cuda": 1 << 16, "cpu": 8192}
POOL = {"cuda": 1 << 21, "cpu": 1 << 18}
# The quantisation-aware fine-tune after them: a sixth more steps from a fresh Adam state (the
# converged float model's second moments are far below the rounded model's gradients, so carried
# over they make steps of many quantisation levels), at its own small rate, cosine to 2% of it.
# Measured on the H200: QAT over the float run's last 30% gave 3.3e-4 on the bunny at 14 KB, 8 bits,
# rounding after float training 3.0e-4.
QAT_SHARE = 1 / 6
QAT_LR = 5e-5
# The clamp of a student's distance loss: a small network spends its capacity where the surface
# is (the bunny at 14 KB, 8 bits: 2.37e-4 at 0.03 against 2.99e-4 at 0.1; spot at 6 KB 2.23e-4
# against 2.90e-4).
CLAMP = 0.03
# The resolution a compressed field's fidelity is measured at, and the samples it takes.
RESOLUTION = 256
EVAL_SAMPLES = 20_000
# Bytes of a packed file besides its weights (header, transform, box, xz framing), measured
# from a few hundred to 700; and the smallest student worth making.
HEADER_BYTES = 700
MIN_WIDTH = 8
MAX_WIDTH = 256
# Below this width a SIREN of three hidden layers at omega 30 grows floaters (spot at 3.6 KB,
# 3,000 CPU steps: 13 components and Chamfer 3.1e-3 at width 28, 5.7e-3 at 24, 6.0e-4 at 32),
# where two hidden layers of 40 give 2.8e-4.
NARROW_WIDTH = 32
# A compressed field whose Chamfer to its source is above this is reported as poor.
POOR_CHAMFER = 1e-3
# A byte target's student is refitted this many times at most when the packed file runs over.
REFITS = 3
# The budgets a Chamfer target searches (bytes), each about 1.5 times the last.
BUDGET_LADDER = tuple(int(2000 * 1.5 ** k) for k in range(14))


@dataclass
class Compressed:
    """A compressed field, the bytes its file holds, and what was measured."""

    field: NeuralField | None
    content: bytes
    report: dict = field(default_factory=dict)
    space: object = None


FAMILIES = ("siren", "fourier")
LEARNING_RATES = {"siren": 5e-4, "fourier": 3e-3}


def _family_config(family: str, width: int, depth: int, seed: int) -> FieldConfig:
    if family == "siren":
        return FieldConfig(encoding="siren", width=width, depth=depth, init_seed=seed).validate()
    return FieldConfig(encoding="fourier", fourier_features=width, fourier_sigma=2.5, width=width, depth=depth,
                       activation="softplus", init_seed=seed).validate()


def student_config(budget: int, bits: int, seed: int = 0, family: str = "siren") -> FieldConfig:
    """The widest student whose packed parameters are expected to fit `budget` bytes: three hidden
    layers below 8 KB, four above (a deeper net spends its weights better once they are many), two
    where three would be narrower than NARROW_WIDTH."""
    best = None
    for depth in (4 if budget >= 8000 else 3, 2):
        best = _widest(family, depth, seed, bits, budget)
        if best is not None and best.width >= NARROW_WIDTH:
            break
    if best is None:
        smallest = _family_config(family, MIN_WIDTH, 3, seed)
        raise ValueError(f"{budget:,} bytes is below the smallest compressed field (about "
                         f"{expected_bytes(smallest, bits):,} bytes at {bits} bits); ask for more")
    return best


def _widest(family: str, depth: int, seed: int, bits: int, budget: int) -> FieldConfig | None:
    best = None
    for width in range(MIN_WIDTH, MAX_WIDTH + 1, 2):
        config = _family_config(family, width, depth, seed)
        if expected_bytes(config, bits) > budget:
            break
        best = config
    return best


def expected_bytes(config: FieldConfig, bits: int) -> int:
    """A packed file's bytes foreseen: its weight matrices at `bits` (LZMA codes block-scaled
    integers at about their bit depth: 6.15 bits a weight measured at 6 bits) and their scales,
    the arrays too small for blocks (biases, the head, a narrow first layer) in float16, the
    header."""
    sizes = [p.numel() for p in FieldNetwork(config).parameters()]
    blocked = sum(n for n in sizes if n >= SMALL_ARRAY)
    return int(HEADER_BYTES + blocked * (bits + 16 / BLOCK) / 8 * 1.02 + 2 * (sum(sizes) - blocked))


class _StudentFitter(FieldFitter):
    """A fit of a student: to a mesh's exact distances, or (with `teacher`) to the teacher's
    values at points sampled near the teacher's surface (`reference`, in object units) and in its
    box; its steps past `float_steps` quantisation-aware."""

    def __init__(self, reference: TriangleMesh, config: FieldConfig, train: TrainConfig, bits: int,
                 teacher: NeuralField | None = None, float_steps: int | None = None):
        super().__init__(reference, config, train)
        self.bits, self.teacher = bits, teacher
        self.quantized_from = train.steps if float_steps is None else float_steps
        if teacher is not None:  # the teacher's frame and box, so the student answers in its units
            self.transform = teacher.transform
            self.field_mesh = reference.transformed(teacher.transform)
            self.box_low, self.box_high = teacher.box_low, teacher.box_high
            pad = train.box_padding
            self.sample_low, self.sample_high = self.box_low - pad, self.box_high + pad

    def build_pool(self) -> None:
        if self.teacher is None:
            return super().build_pool()
        start = time.perf_counter()
        cfg = self.train_config
        sampler = DeviceSampler(self.field_mesh, self.device, cfg.seed)
        uniform = int(round(cfg.pool_size * 0.2))
        points = torch.cat([sampler.near_surface(cfg.pool_size - uniform, cfg.near_scales),
                            sampler.uniform_box(self.sample_low, self.sample_high, uniform)])
        points = points[morton_order_tensor(points, self.sample_low, self.sample_high)].contiguous()
        teacher_points = points.to(self.teacher.device)
        values = self.teacher.evaluate_field_space(teacher_points).to(self.device)
        self._pool_points, self._pool_sdf = points, values
        self.timings["groundtruth_seconds"] = time.perf_counter() - start

    def learning_rate(self, step: int) -> float:
        """Cosine decay over the float steps, then over the quantised fine-tune from QAT_LR."""
        cfg = self.train_config
        if step < self.quantized_from:
            progress = step / max(1, self.quantized_from - 1)
            top, floor = cfg.lr, cfg.lr * cfg.lr_final_fraction
        else:
            progress = (step - self.quantized_from) / max(1, cfg.steps - self.quantized_from - 1)
            top, floor = QAT_LR, QAT_LR * cfg.lr_final_fraction
        return floor + 0.5 * (top - floor) * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def step(self) -> None:
        if self.step_count == self.quantized_from:
            start_quantized_training(self.network, self.bits)
            self.optimizer.state.clear()
            if self._graph is not None or self.device == "cuda":  # the graph holds the old state: capture anew
                self._graph, self._graph_pending = None, self.device == "cuda"
        super().step()

    def finish(self) -> NeuralField:
        if self.step_count > self.quantized_from:
            finish_quantized_training(self.network)
        result = self.field()
        result.side_network = result.side_config = None  # a shell's sheet sides are not kept
        return result


def compress(source: NeuralField | TriangleMesh, *, target_bytes: int | None = None,
             target_chamfer: float | None = None, bits: int = DEFAULT_BITS, device: str = "auto",
             seed: int = 0, family: str = "siren", steps: int | None = None, on_progress=None) -> Compressed:
    """A compressed field of `source` (a fitted field, distilled; or a mesh, fitted directly) no
    larger than `target_bytes`, or the smallest on the budget ladder whose Chamfer-L1 to the
    source is within `target_chamfer` (relative to the diagonal). `steps`: float training steps
    per student (None: STEPS of the device), followed by a quantised fine-tune of QAT_SHARE more."""
    _check_targets(target_bytes, target_chamfer, bits, family)
    device = resolve_device(device)
    start = time.perf_counter()
    teacher = None
    if isinstance(source, NeuralField):
        if source.kind != "sdf":
            raise ValueError("compress distils signed-distance fields; an occupancy field has no distances to "
                             "distil: compress its mesh instead")
        teacher = _on_device(source, device)
        reference = extract_isosurface(teacher, RESOLUTION)
        if not len(reference.faces):
            raise ValueError("the field has no surface at level 0: there is nothing to compress")
    else:
        reference = source
    notes = []
    if teacher is not None and (teacher.has_color or teacher.has_sides):
        notes.append("the compressed field keeps the shape only: "
                     + " and ".join(n for n, kept in (("colour", teacher.has_color), ("sheet sides", teacher.has_sides))
                                    if kept) + " are not kept")

    def attempt(budget: int, index: int, total: int) -> Compressed:
        if on_progress:
            on_progress({"phase": "train", "step": index, "steps": total, "budget": budget})
        return _fit_student(reference, teacher, budget, bits, device, seed, family, steps or STEPS[device])

    if target_bytes is not None:
        result = _within_bytes(attempt, target_bytes)
    else:
        result = _within_chamfer(attempt, reference, target_chamfer)
    metrics = result.report.get("fidelity") or _fidelity(reference, result.field)
    size = len(result.content)
    result.report = {
        "bytes": size, "bits": bits, "parameters": parameter_count(result.field.network),
        "width": result.field.config.width, "depth": result.field.config.depth,
        "chamfer_l1": metrics["chamfer_l1"], "normal_consistency": metrics["normal_consistency"],
        "fscore": metrics["fscore"], "reference": "the teacher's surface" if teacher is not None else "the mesh",
        "target_bytes": target_bytes, "target_chamfer": target_chamfer, "device": device,
        "seconds": time.perf_counter() - start, "notes": notes,
    }
    if target_bytes is not None and metrics["chamfer_l1"] > POOR_CHAMFER:
        notes.append(f"the compressed field is far from its source (Chamfer-L1 {metrics['chamfer_l1']:.2e} of the "
                     f"diagonal): {size:,} bytes are too few for this shape; give it more")
    if target_chamfer is not None and metrics["chamfer_l1"] > target_chamfer:
        notes.append(f"Chamfer {metrics['chamfer_l1']:.2e} misses the target {target_chamfer:.2e} even at "
                     f"{size:,} bytes, the largest budget tried")
    return result


def _check_targets(target_bytes, target_chamfer, bits, family="siren") -> None:
    if (target_bytes is None) == (target_chamfer is None):
        raise ValueError("compress needs one target: a size in bytes or a Chamfer-L1")
    if target_bytes is not None and not (isinstance(target_bytes, int) and target_bytes > 0):
        raise ValueError(f"the byte target must be a positive whole number, got {target_bytes!r}")
    if target_chamfer is not None and not (isinstance(target_chamfer, float) and math.isfinite(target_chamfer)
                                           and 0 < target_chamfer < 1):
        raise ValueError(f"the Chamfer target must lie in (0, 1) (relative to the diagonal), got {target_chamfer!r}")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    if bits not in BITS_CHOICES:
        raise ValueError(f"bits must be one of {', '.join(map(str, BITS_CHOICES))}, got {bits!r}")


def _on_device(field: NeuralField, device: str) -> NeuralField:
    move = (lambda n: None if n is None else n.to(device))
    return replace(field, network=move(field.network), color_network=move(field.color_network),
                   side_network=move(field.side_network))


def _fit_student(reference, teacher, budget: int, bits: int, device: str, seed: int, family: str,
                 steps: int) -> Compressed:
    config = student_config(budget, bits, seed, family)
    train = TrainConfig(steps=steps + max(1, round(steps * QAT_SHARE)), batch=BATCH[device],
                        pool_size=POOL[device], lr=LEARNING_RATES[family], lr_final_fraction=0.02, device=device,
                        seed=seed, surface="solid" if teacher else "auto", clamp=CLAMP, report_every=500).validate()
    fitter = _StudentFitter(reference, config, train, bits, teacher, float_steps=steps)
    fitter.run()
    student = fitter.finish()
    student.report = {"compressed": True, "train_seconds": round(fitter.timings["train_seconds"], 2)}
    return Compressed(student, field_content(student, f"int{bits}", CODEC))


def _within_bytes(attempt, target: int) -> Compressed:
    """The student for `target` bytes, refitted smaller while its packed file runs over."""
    budget = target
    for index in range(REFITS + 1):
        result = attempt(budget, index, REFITS + 1)
        size = len(result.content)
        if size <= target:
            return result
        budget = int(budget * target / size * 0.97)
    raise ValueError(f"no student fitted within {target:,} bytes (the last took {size:,}); ask for more bytes")


def _within_chamfer(attempt, reference: TriangleMesh, target: float) -> Compressed:
    """The smallest budget of the ladder whose student meets `target`, by bisection (fidelity
    grows with bytes); the largest tried when none does."""
    low, high = 0, len(BUDGET_LADDER) - 1
    best = largest = None
    trials, total = 0, math.ceil(math.log2(len(BUDGET_LADDER))) + 1
    while low <= high:
        middle = (low + high) // 2
        result = attempt(BUDGET_LADDER[middle], trials, total)
        trials += 1
        result.report["fidelity"] = _fidelity(reference, result.field)
        if result.report["fidelity"]["chamfer_l1"] <= target:
            best, high = result, middle - 1
        else:
            largest, low = result, middle + 1
    return best or largest


def _fidelity(reference: TriangleMesh, student: NeuralField) -> dict:
    surface = extract_isosurface(student, RESOLUTION)
    if not len(surface.faces):
        return {"chamfer_l1": math.inf, "normal_consistency": 0.0, "fscore": 0.0}
    return compare_meshes(reference, surface, samples=EVAL_SAMPLES)


# ----------------------------------------------------------------------------- shape spaces

def compress_space(space, *, target_bytes: int | None = None, target_chamfer: float | None = None,
                   device: str = "auto") -> Compressed:
    """A shape space stored at the most bits (of BITS_CHOICES) within `target_bytes`, or the
    fewest whose every shape's surface is within `target_chamfer` of the space's own: one decoder
    for all shapes, every code and latent grid quantised with it."""
    _check_targets(target_bytes, target_chamfer, DEFAULT_BITS)
    from ..fields.shapespace import select_field
    
    device = resolve_device(device)
    start = time.perf_counter()
    references = None
    chosen = None
    for bits in BITS_CHOICES:  # most bits first: the first within the byte target is the best kept
        content = space_content(space, f"int{bits}", CODEC)
        if target_bytes is not None:
            if len(content) <= target_bytes:
                chosen = (bits, content, None)
                break
            continue
        if references is None:
            references = [extract_isosurface(select_field(space, shape=i), RESOLUTION) for i in range(len(space.names))]
        quantised = load_content(content, device)
        worst = max(_fidelity(references[i], select_field(quantised, shape=i))["chamfer_l1"]
                    for i in range(len(space.names)))
        if worst <= target_chamfer:
            chosen = (bits, content, worst)
        else:
            break
    if chosen is None:
        if target_bytes is not None:
            smallest = len(space_content(space, f"int{BITS_CHOICES[-1]}", CODEC))
            raise ValueError(f"the space takes {smallest:,} bytes at {BITS_CHOICES[-1]} bits, more than the target "
                             f"{target_bytes:,}: its decoder is that large; fit a smaller space")
        raise ValueError(f"even at {BITS_CHOICES[0]} bits a shape misses the Chamfer target {target_chamfer:.2e}")
    bits, content, worst = chosen
    return Compressed(None, content, {"bytes": len(content), "bits": bits, "shapes": len(space.names),
                                      "worst_chamfer_l1": worst, "seconds": time.perf_counter() - start,
                                      "target_bytes": target_bytes, "target_chamfer": target_chamfer},
                      space=load_content(content, device))
