"""The exploration behind compress's training recipe (issue 21), on the bunny at 15 and 40 KB and
spot at 6.5 and 3.6 KB, each student fitted to the mesh's exact distances and measured as stored
(decoded from its packed bytes) against the mesh:

    python scripts/probe_students.py [--only NAME,...] [--cases MESH:BYTES,...]
        one student per variant of the first recipe (VARIANTS: steps, batch, learning rate,
        clamp, loss, SIREN's omega, depth, the quantisation-aware share)
    python scripts/probe_students.py --finetunes [--cases ...]
        float training, then a quantised fine-tune with Adam's state carried over (FINETUNES)
    PROBE_BITS=MESH:BYTES,... python scripts/probe_students.py
        8, 10 and 12 bits at equal bytes: float, rounded after, and fine-tuned from a fresh Adam state

Run on the GPU machine with the meshes copied into .gpu/ of the checkout (../shared does not
travel there); rows go to stdout and $OUT/students.jsonl as JSON lines
(docs/data/compress_recipe_h200.jsonl holds the H200's)."""

import argparse
import json
import math
import os
import time
from dataclasses import replace

import benchlib  # noqa: F401 - the checkout's package on the path
import neural_field_addon.core.compression.compress as compression
from neural_field_addon.core.config import TrainConfig
from neural_field_addon.core.io.fieldfile import field_content, load_content
from neural_field_addon.core.io.meshio import load_mesh
from neural_field_addon.core.surface.extraction import extract_isosurface
from neural_field_addon.core.surface.metrics import compare_meshes

OUT = os.environ.get("OUT", "/tmp")
DEVICE = os.environ.get("PROBE_DEVICE", "cuda")

# name: (train overrides, field overrides, QAT share, depth or None)
VARIANTS = {
    "base": ({}, {}, 0.3, None),
    "clamp05": ({"clamp": 0.05}, {}, 0.3, None),
    "clamp03": ({"clamp": 0.03}, {}, 0.3, None),
    "mape": ({"sdf_loss": "mape"}, {}, 0.3, None),
    "lr1e3": ({"lr": 1e-3}, {}, 0.3, None),
    "lr2e4": ({"lr": 2e-4}, {}, 0.3, None),
    "omega20": ({}, {"siren_omega": 20.0}, 0.3, None),
    "omega45": ({}, {"siren_omega": 45.0}, 0.3, None),
    "depth3": ({}, {}, 0.3, 3),
    "depth5": ({}, {}, 0.3, 5),
    "qat10": ({}, {}, 0.1, None),
    "qat0": ({}, {}, 0.0, None),
    "batch14": ({"batch": 1 << 14}, {}, 0.3, None),
    "long": ({"steps": 36_000}, {}, 0.3, None),
    "long_batch14": ({"steps": 36_000, "batch": 1 << 14}, {}, 0.3, None),
    "near_tight": ({"near_scales": (0.001, 0.005, 0.03)}, {}, 0.3, None),
}
CASES = (("stanford-bunny", 15_000), ("spot", 6_500), ("stanford-bunny", 40_000))


# name: (clamp, fine-tune steps, fine-tune lr, cosine) - float training then a quantised fine-tune
FINETUNES = {
    "ptq": (0.1, 0, 0.0, False),
    "ft_2e5": (0.1, 2000, 2e-5, False),
    "ft_5e5cos": (0.1, 2000, 5e-5, True),
    "ft_1e4cos": (0.1, 2000, 1e-4, True),
    "c03_ptq": (0.03, 0, 0.0, False),
    "c03_ft_2e5": (0.03, 2000, 2e-5, False),
    "c03_ft_5e5cos": (0.03, 2000, 5e-5, True),
    "c03_ft_1e4cos": (0.03, 2000, 1e-4, True),
    "c03_o20_ft_5e5cos": (0.03, 2000, 5e-5, True),
}


class FinetuneFitter(compression._StudentFitter):
    """Float training over `float_steps` (cosine), then a quantisation-aware fine-tune at its own rate."""

    def __init__(self, mesh, config, train, bits, float_steps, lr, cosine):
        super().__init__(mesh, config, train, bits)
        self.quantized_from, self.float_steps, self.finetune_lr, self.cosine = float_steps, float_steps, lr, cosine

    def learning_rate(self, step):
        cfg = self.train_config
        if step < self.float_steps:
            progress = step / max(1, self.float_steps - 1)
            floor = cfg.lr * cfg.lr_final_fraction
            return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress))
        if not self.cosine:
            return self.finetune_lr
        progress = (step - self.float_steps) / max(1, cfg.steps - self.float_steps - 1)
        return self.finetune_lr * (0.02 + 0.49 * (1.0 + math.cos(math.pi * progress)))


def finetuned(mesh, budget, name):
    clamp, extra, lr, cosine = FINETUNES[name]
    config = compression.student_config(budget, 8)
    if "_o20_" in name:
        config = replace(config, siren_omega=20.0).validate()
    train = TrainConfig(steps=12_000 + extra, batch=1 << 16, pool_size=1 << 21, lr=5e-4, lr_final_fraction=0.02,
                        device=DEVICE, seed=0, surface="auto", report_every=500, clamp=clamp).validate()
    fitter = FinetuneFitter(mesh, config, train, 8, 12_000, lr, cosine)
    start = time.perf_counter()
    fitter.run()
    field = fitter.finish()
    return config, field_content(field, "int8", "lzma"), time.perf_counter() - start, field


def log(row: dict) -> None:
    print(json.dumps(row), flush=True)
    with open(os.path.join(OUT, "students.jsonl"), "a") as handle:
        handle.write(json.dumps(row) + "\n")


def config_for(budget: int, depth: int | None):
    config = compression.student_config(budget, 8)
    if depth is None:
        return config
    best = None
    for width in range(8, 257, 4):
        candidate = replace(config, width=width, depth=depth).validate()
        if compression.expected_bytes(candidate, 8) > budget:
            break
        best = candidate
    return best


def student(mesh, budget: int, train_over: dict, field_over: dict, qat: float, depth):
    config = replace(config_for(budget, depth), **field_over).validate()
    settings = dict(steps=12_000, batch=1 << 16, pool_size=1 << 21, lr=5e-4, lr_final_fraction=0.02,
                    device=DEVICE, seed=0, surface="auto", report_every=500)
    settings.update(train_over)
    compression.QAT_FRACTION = qat
    fitter = compression._StudentFitter(mesh, config, TrainConfig(**settings).validate(), 8)
    start = time.perf_counter()
    fitter.run()
    field = fitter.finish()
    seconds = time.perf_counter() - start
    content = field_content(field, "int8", "lzma")
    return config, content, seconds, field


def measure(mesh, field) -> dict:
    metrics = compare_meshes(mesh, extract_isosurface(field, 256), samples=100_000)
    return dict(chamfer=metrics["chamfer_l1"], nc=metrics["normal_consistency"], f=metrics["fscore"])


if __name__ == "__main__" and not os.environ.get("PROBE_BITS"):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meshes", default=".gpu")
    parser.add_argument("--only", default="")
    parser.add_argument("--finetunes", action="store_true")
    parser.add_argument("--cases", default=",".join(f"{m}:{b}" for m, b in CASES))
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    meshes = {}
    for case in args.cases.split(","):
        mesh_name, budget = case.split(":")[0], int(case.split(":")[1])
        mesh = meshes.setdefault(mesh_name, load_mesh(os.path.join(args.meshes, f"{mesh_name}.obj")))
        if args.finetunes:
            for name in [n for n in args.only.split(",") if n] or list(FINETUNES):
                config, content, seconds, field = finetuned(mesh, budget, name)
                row = dict(mesh=mesh_name, budget=budget, variant=name, bytes=len(content), width=config.width,
                           depth=config.depth, seconds=round(seconds, 2), **measure(mesh, load_content(content, DEVICE)))
                if name.endswith("ptq"):
                    row["float_chamfer"] = measure(mesh, field)["chamfer"]
                log(row)
            continue
        for name in names:
            train_over, field_over, qat, depth = VARIANTS[name]
            config, content, seconds, field = student(mesh, budget, train_over, field_over, qat, depth)
            row = dict(mesh=mesh_name, budget=budget, variant=name, bytes=len(content), width=config.width,
                       depth=config.depth, seconds=round(seconds, 2),
                       **measure(mesh, load_content(content, DEVICE)))
            if qat == 0.0:
                row["float_chamfer"] = measure(mesh, field)["chamfer"]
            log(row)


# ----------------------------------------------------------------------------- bits beyond 8

def estimated_bytes(network, bits: int) -> int:
    """The packed bytes of `network` at `bits` (above 8: two byte planes), LZMA as the container."""
    import lzma

    import numpy as np

    from neural_field_addon.core.io import codecs
    plain, planes = [], []
    for tensor in network.state_dict().values():
        array = tensor.detach().float().cpu().numpy().reshape(-1)
        if array.size < codecs.SMALL_ARRAY:
            plain.append(array.astype(np.float16).tobytes())
            continue
        levels = 2 ** (bits - 1) - 1
        blocks = np.zeros((-(-array.size // 64), 64), np.float32)
        blocks.reshape(-1)[: array.size] = array
        scale = (np.abs(blocks).max(axis=1) / levels).astype(np.float16)
        ints = np.rint(blocks / np.where(scale > 0, scale.astype(np.float32), 1)[:, None]).astype(np.int32)
        zig = np.where(ints >= 0, 2 * ints, -2 * ints - 1).reshape(-1)[: array.size].astype(np.uint16)
        plain.append(scale.tobytes())
        planes.append((zig & 255).astype(np.uint8).tobytes())
        if bits > 8:
            planes.append((zig >> 8).astype(np.uint8).tobytes())
    payload = b"".join(plain) + b"".join(planes)
    return 700 + len(lzma.compress(payload, format=lzma.FORMAT_XZ, filters=codecs._LZMA_FILTERS))


def quantised_copy(field, bits: int):
    import copy

    import torch

    from neural_field_addon.core.compression.quantization import fake_quantize
    result = copy.deepcopy(field)
    with torch.no_grad():
        for parameter in result.network.parameters():
            parameter.copy_(fake_quantize(parameter, bits))
    return result


class ResetFitter(FinetuneFitter):
    """FinetuneFitter whose quantised fine-tune starts from a fresh Adam state (the converged
    float model's second moments are far below the quantised model's gradients)."""

    def step(self):
        if self.step_count == self.float_steps:
            import copy
            self.float_network = copy.deepcopy(self.network)
            self.optimizer.state.clear()
        super().step()


def bits_sweep(mesh, budget: int, mesh_name: str) -> None:
    for bits in (8, 10, 12):
        config = None
        for width in range(8, 257, 4):
            candidate = replace(compression.student_config(budget, 8), width=width).validate()
            count = compression.parameter_count(compression.FieldNetwork(candidate))
            if 700 + count * (bits + 0.3) / 8 > budget:
                break
            config = candidate
        train = TrainConfig(steps=14_000, batch=1 << 16, pool_size=1 << 21, lr=5e-4, lr_final_fraction=0.02,
                            device=DEVICE, seed=0, surface="auto", report_every=500, clamp=0.03).validate()
        fitter = ResetFitter(mesh, config, train, bits, 12_000, 5e-5, True)
        fitter.run()
        qat = fitter.finish()
        floated = replace(qat, network=fitter.float_network)
        base = dict(mesh=mesh_name, budget=budget, bits=bits, width=config.width, depth=config.depth)
        log(dict(base, variant="float", chamfer=measure(mesh, floated)["chamfer"]))
        log(dict(base, variant="ptq", bytes=estimated_bytes(fitter.float_network, bits),
                 **measure(mesh, quantised_copy(floated, bits))))
        log(dict(base, variant="qat_reset", bytes=estimated_bytes(qat.network, bits), **measure(mesh, qat)))


if __name__ == "__main__" and os.environ.get("PROBE_BITS"):
    for case in os.environ["PROBE_BITS"].split(","):
        name, budget = case.split(":")
        bits_sweep(load_mesh(os.path.join(".gpu", f"{name}.obj")), int(budget), name)
