"""The trunk and head of a hash-grid field, forward and backward fused into Triton kernels.

The fast preset's network after its encoding is small (32 -> 64 -> 64 -> 1, ReLU, no hidden
biases), so under PyTorch a training step spent more time moving its activations through memory
(casts, six matrix products, ReLUs and their backward, one kernel each) than computing them. Here
a program keeps a tile of points' activations in registers through the whole MLP:

- forward: encoded points in, the head's output out, nothing stored between layers;
- backward: recomputes the tile's activations, takes the gradient back through every layer and
  writes only the gradient of the encoded input; weight gradients are summed over the tiles a
  program handles (persistent programs) and the programs' partial sums are added up once.

Numerics are those of bf16 autocast: bf16 matrix operands, fp32 accumulation (the head's output
is not rounded to bf16, so it is slightly more accurate). Used for training on CUDA under bf16
autocast when `fused_trunk_shapes.fused_trunk_eligible` says the network has this shape; checked
against the PyTorch layers in the CUDA tests.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .fused_trunk_shapes import FUSED_TRUNK_MAX_DEPTH as MAX_DEPTH  # fused_trunk_eligible: the shapes computed here


@triton.jit
def _transposed(ptr, ROWS: tl.constexpr, COLS: tl.constexpr):
    """A row-major (ROWS, COLS) fp32 matrix as its (COLS, ROWS) transpose in bf16."""
    r = tl.arange(0, ROWS)
    c = tl.arange(0, COLS)
    return tl.load(ptr + r[None, :] * COLS + c[:, None]).to(tl.bfloat16)


@triton.jit
def _matrix(ptr, ROWS: tl.constexpr, COLS: tl.constexpr):
    r = tl.arange(0, ROWS)
    c = tl.arange(0, COLS)
    return tl.load(ptr + r[:, None] * COLS + c[None, :]).to(tl.bfloat16)


@triton.jit
def _layer(x, weight_t):
    """ReLU(x @ W^T) in bf16 from bf16 operands with fp32 accumulation."""
    return tl.maximum(tl.dot(x, weight_t), 0.0).to(tl.bfloat16)


@triton.jit(do_not_specialize=["count"])
def mlp_forward_kernel(x_ptr, count, w1_ptr, w2_ptr, w3_ptr, head_w_ptr, head_b_ptr, out_ptr,
                       IN: tl.constexpr, W: tl.constexpr, DEPTH: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = rows < count
    columns = tl.arange(0, IN)
    x = tl.load(x_ptr + rows[:, None] * IN + columns[None, :], mask=mask[:, None], other=0.0).to(tl.bfloat16)
    h = _layer(x, _transposed(w1_ptr, W, IN))
    if DEPTH >= 2:
        h = _layer(h, _transposed(w2_ptr, W, W))
    if DEPTH >= 3:
        h = _layer(h, _transposed(w3_ptr, W, W))
    head_w = tl.load(head_w_ptr + tl.arange(0, W))
    out = tl.sum(h.to(tl.float32) * head_w[None, :], axis=1) + tl.load(head_b_ptr)
    tl.store(out_ptr + rows, out, mask=mask)


@triton.jit(do_not_specialize=["count", "tiles"])
def mlp_backward_kernel(x_ptr, grad_ptr, count, tiles, w1_ptr, w2_ptr, w3_ptr, head_w_ptr, dx_ptr,
                        dw1_ptr, dw2_ptr, dw3_ptr, dhead_ptr,
                        IN: tl.constexpr, W: tl.constexpr, DEPTH: tl.constexpr, BLOCK: tl.constexpr):
    program = tl.program_id(0)
    programs = tl.num_programs(0)
    columns = tl.arange(0, IN)
    units = tl.arange(0, W)
    w1_t = _transposed(w1_ptr, W, IN)
    w1 = _matrix(w1_ptr, W, IN)
    head_w = tl.load(head_w_ptr + units)
    acc1 = tl.zeros((W, IN), tl.float32)
    if DEPTH >= 2:
        w2_t = _transposed(w2_ptr, W, W)
        w2 = _matrix(w2_ptr, W, W)
        acc2 = tl.zeros((W, W), tl.float32)
    if DEPTH >= 3:
        w3_t = _transposed(w3_ptr, W, W)
        w3 = _matrix(w3_ptr, W, W)
        acc3 = tl.zeros((W, W), tl.float32)
    acc_head = tl.zeros((W,), tl.float32)
    acc_bias = tl.zeros((BLOCK,), tl.float32)
    for tile in range(program, tiles, programs):
        rows = tile * BLOCK + tl.arange(0, BLOCK)
        mask = rows < count
        x = tl.load(x_ptr + rows[:, None] * IN + columns[None, :], mask=mask[:, None], other=0.0).to(tl.bfloat16)
        grad = tl.load(grad_ptr + rows, mask=mask, other=0.0)
        h1 = _layer(x, w1_t)
        last = h1
        if DEPTH >= 2:
            h2 = _layer(h1, w2_t)
            last = h2
        if DEPTH >= 3:
            h3 = _layer(h2, w3_t)
            last = h3
        acc_head += tl.sum(grad[:, None] * last.to(tl.float32), axis=0)
        acc_bias += grad
        upstream = grad[:, None] * head_w[None, :]  # d loss / d last hidden output
        if DEPTH >= 3:
            dz = tl.where(h3 > 0, upstream, 0.0).to(tl.bfloat16)
            acc3 += tl.dot(tl.trans(dz), h2)
            upstream = tl.dot(dz, w3)
        if DEPTH >= 2:
            dz = tl.where(h2 > 0, upstream, 0.0).to(tl.bfloat16)
            acc2 += tl.dot(tl.trans(dz), h1)
            upstream = tl.dot(dz, w2)
        dz = tl.where(h1 > 0, upstream, 0.0).to(tl.bfloat16)
        acc1 += tl.dot(tl.trans(dz), x)
        dx = tl.dot(dz, w1)
        tl.store(dx_ptr + rows[:, None] * IN + columns[None, :], dx, mask=mask[:, None])
    # This program's partial weight gradients; the launcher sums them over programs.
    tl.store(dw1_ptr + program * W * IN + units[:, None] * IN + columns[None, :], acc1)
    if DEPTH >= 2:
        tl.store(dw2_ptr + program * W * W + units[:, None] * W + units[None, :], acc2)
    if DEPTH >= 3:
        tl.store(dw3_ptr + program * W * W + units[:, None] * W + units[None, :], acc3)
    tl.store(dhead_ptr + program * (W + 1) + units, acc_head)
    tl.store(dhead_ptr + program * (W + 1) + W, tl.sum(acc_bias, axis=0))


FORWARD_BLOCK = 128
BACKWARD_BLOCK = 64
# Shapes (inputs, width, depth) per device whose kernels compiled and ran: wide, deep networks can
# need more shared memory than a GPU has (an H100 refused width 128 at depth 3 with 128 inputs;
# consumer GPUs have less than half its 227 KB). Those keep PyTorch's layers.
_RUNS: dict = {}


def _programs(device, tiles: int) -> int:
    """Persistent backward programs: two per multiprocessor, no more than there are tiles."""
    return max(1, min(tiles, 2 * torch.cuda.get_device_properties(device).multi_processor_count))


def runs_on(device, inputs: int, width: int, depth: int) -> bool:
    """Whether the kernels compile and run for this shape on this device: tried once (forward and
    backward on a few rows, eagerly, before any CUDA-graph capture) and remembered."""
    key = (str(device), inputs, width, depth)
    if key not in _RUNS:
        try:
            x = torch.randn(3, inputs, device=device)
            hidden = [torch.randn(width, inputs, device=device)] + [
                torch.randn(width, width, device=device) for _ in range(depth - 1)]
            head_weight, head_bias = torch.randn(1, width, device=device), torch.zeros(1, device=device)
            context = _Context()
            out = _FusedMLP.forward(context, x, head_weight, head_bias, *hidden)
            _FusedMLP.backward(context, torch.ones_like(out))
            torch.cuda.synchronize(device)
            _RUNS[key] = True
        except Exception:  # noqa: BLE001 - Triton's OutOfResources and compile failures alike
            _RUNS[key] = False
    return _RUNS[key]


class _Context:
    """A stand-in for autograd's context when runs_on calls the Function's methods directly."""

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors


def _padded(tensors: list) -> list:
    """Up to MAX_DEPTH tensors: the kernels take a pointer per possible layer; unused ones repeat
    the first (never read, DEPTH is a compile-time constant)."""
    return list(tensors) + [tensors[0]] * (MAX_DEPTH - len(tensors))


class _FusedMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, head_weight, head_bias, *hidden):
        count, width = len(x), hidden[0].shape[0]
        weights = [w.float().contiguous() for w in hidden]
        head_weight = head_weight.float().contiguous().view(-1)
        head_bias = head_bias.float().contiguous().view(-1)
        x = x.float().contiguous()
        out = torch.empty(count, dtype=torch.float32, device=x.device)
        if count:
            mlp_forward_kernel[(triton.cdiv(count, FORWARD_BLOCK),)](
                x, count, *_padded(weights), head_weight, head_bias, out,
                IN=x.shape[1], W=width, DEPTH=len(hidden), BLOCK=FORWARD_BLOCK,
            )
        ctx.save_for_backward(x, head_weight, *weights)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x, head_weight, *hidden = ctx.saved_tensors
        count, inputs = x.shape
        width, depth = hidden[0].shape[0], len(hidden)
        tiles = triton.cdiv(count, BACKWARD_BLOCK)
        programs = _programs(x.device, tiles)
        partial = [torch.empty(programs, *w.shape, dtype=torch.float32, device=x.device) for w in hidden]
        partial_head = torch.empty(programs, width + 1, dtype=torch.float32, device=x.device)
        dx = torch.empty_like(x)
        if count:
            mlp_backward_kernel[(programs,)](
                x, grad_out.float().contiguous(), count, tiles, *_padded(hidden), head_weight, dx, *_padded(partial),
                partial_head, IN=inputs, W=width, DEPTH=depth, BLOCK=BACKWARD_BLOCK,
                num_stages=1,  # no software pipelining of the tile loop: its buffers cost shared memory
            )
        else:
            for p in (*partial, partial_head):
                p.zero_()
        head = partial_head.sum(dim=0)
        return (dx, head[:width].view(1, width), head[width:], *(p.sum(dim=0) for p in partial))


def fused_mlp(encoded: torch.Tensor, hidden: list[torch.Tensor], head_weight: torch.Tensor,
              head_bias: torch.Tensor) -> torch.Tensor:
    """The head's output (q,) float32 for encoded points (q, IN): hidden weights (width, in) each,
    head weight (1, width) and bias (1,)."""
    return _FusedMLP.apply(encoded, head_weight, head_bias, *hidden)
