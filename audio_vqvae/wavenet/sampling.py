"""Incremental generation for the WaveNet decoder (Fast WaveNet, Paine et al. 2016): exact step-by-step sampling
whose cost per sample does not depend on the receptive field, batched over utterances.

`generate` drives two interchangeable step kernels over the same weight layout (`StepWeights`) and state
(`StepState`): a torch reference that runs on any device, and a numba-compiled CPU kernel that is several times
faster. numba is imported, and the kernel compiled, only the first time that kernel runs.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from .model import WaveNet

CHUNK_SAMPLES = 512  # generation prepares conditioning and noise this many samples at a time (bounds memory)


def gumbel_like(
    shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None = None
) -> Tensor:
    """Standard Gumbel noise -log(-log(u)): argmax(logits + noise) samples from softmax(logits). u in [0, 1), so the
    noise is never +inf (u = 0 gives -inf: that class is not drawn). All sampling randomness (both kernels) is this
    noise, drawn from `generator` (None = torch's global generator)."""
    return torch.rand(shape, device=device, generator=generator).log_().neg_().log_().neg_()



@dataclass
class StepWeights:
    """The decoder's weights laid out for incremental steps: every matrix is [in, out], row-major.

    One sigmoid serves the whole gate, as tanh(a) = 2 sigmoid(2a) - 1: the inputs of the tanh half are pre-scaled
    by 2, the kernels compute the gated output negated, -z = s_b - 2 s_a s_b (one fused op), and `res_skip` is
    negated to match. `res_skip` takes -z with a constant 1 appended (its last row is the bias). (A sigmoid, not
    a tanh: torch's CPU tanh is several times slower.)
    """

    emb: Tensor  # [n_classes, R]
    cur: Tensor  # [L, R, G]         dilated-conv tap at t
    past: Tensor  # [k-1, L, R, G]    taps at t - j*d, j = 1 .. k-1
    res_skip: Tensor  # [L, G/2+1, R+S]  residual | skip 1x1s (the last layer's residual part is zero)
    hidden_w: Tensor  # [S, S]
    hidden_b: Tensor  # [S]
    logit_w: Tensor  # [S, n_classes]   divided by the temperature
    logit_b: Tensor  # [n_classes]      divided by the temperature


@dataclass
class StepState:
    """What incremental generation carries from step to step for a batch of B rows: each layer's last (k-1)*d
    inputs, in one ring buffer per layer (concatenated along dim 0). Row p of `read_idx` / `write_idx` lists the
    queue rows to read (the past taps, j-major: index j*L + l) and to write (each layer's input) at every step t
    with t % period == p.
    """

    queue: Tensor  # [sum_l (k-1)*d_l, B, R]
    read_idx: Tensor  # [period, (k-1)*L]
    write_idx: Tensor  # [period, L]


@torch.no_grad()
def step_weights(net: WaveNet, temperature: float = 1.0) -> StepWeights:
    """The parameters rearranged for the step kernels (see StepWeights), logits divided by `temperature`."""
    n, k, r, g = len(net.dilations), net.kernel_size, net.residual_channels, net.gate_channels
    gate_scale = torch.ones(g, device=net.embed.weight.device)
    gate_scale[: g // 2] = 2.0
    w = torch.stack([conv.weight for conv in net.dilated]) * gate_scale[:, None, None]  # [L, G, R, k]
    w = w.permute(3, 0, 2, 1)  # [k, L, R, G]; tap i looks at t - (k-1-i)*d
    res_skip = w.new_zeros(n, g // 2 + 1, r + net.skip_channels)
    for i, o in enumerate(net.out):
        res_skip[i, :, -o.out_channels :] = torch.cat([-o.weight[:, :, 0].t(), o.bias[None]])
    head = net.head_weights()
    return StepWeights(
        emb=net.embed.weight.contiguous(),
        cur=w[k - 1].contiguous(),
        past=w[: k - 1].flip(0).contiguous(),
        res_skip=res_skip,
        hidden_w=head.hidden_w.t().contiguous(),
        hidden_b=head.hidden_b.contiguous(),
        logit_w=(head.logit_w.t() / temperature).contiguous(),
        logit_b=head.logit_b / temperature,
    )

def step_state(net: WaveNet, batch: int) -> StepState:
    """Empty queues for `batch` rows (their zeros are the causal zero padding of `forward`)."""
    k, like = net.kernel_size, net.embed.weight
    sizes = [(k - 1) * d for d in net.dilations]
    offsets, sizes_t = torch.tensor([0] + sizes[:-1]).cumsum(0), torch.tensor(sizes)
    t = torch.arange(math.lcm(*sizes))[:, None, None]  # [period, 1, 1]
    j = torch.arange(1, k)[None, :, None]  # [1, k-1, 1]
    read = offsets + (t - j * torch.tensor(net.dilations)) % sizes_t  # [period, k-1, L]
    return StepState(
        queue=like.new_zeros(sum(sizes), batch, net.residual_channels),
        read_idx=read.flatten(1).to(like.device),
        write_idx=(offsets + t[:, 0] % sizes_t).to(like.device),
    )

@torch.no_grad()
def generate(
    net: WaveNet,
    latents: Tensor,
    g: Tensor | None,
    temperature: float = 1.0,
    greedy: bool = False,
    lengths: Tensor | None = None,
    teacher: Tensor | None = None,
    start_class: int = 128,
    progress: Callable[[int], None] | None = None,
    kernel: str = "auto",
    generator: torch.Generator | None = None,
    excitation: Tensor | None = None,
) -> Tensor:
    """Sample classes [B, T] (T = T_z*hop) one step at a time, batched over utterances.

    lengths [B]: samples wanted per item; generation stops after the longest, positions past an item's length
    are don't-care (filled with `start_class` past the longest). teacher [B, T]: feed these previous classes
    instead of the samples and return the logits [B, n_classes, T] (equal to `forward`'s).
    progress(n) is called with the number of new samples after each chunk. kernel: "torch" (the reference, any
    device) or "numba" (compiled, CPU float32 only, several times faster); "auto" = numba on CPU, else torch.
    excitation [B, H, T]: the F0 harmonics, iff the net takes them (`WaveNet.forward`).
    """
    net._check(latents, g, excitation)
    batch, n_frames, device = latents.shape[0], latents.shape[-1], latents.device
    total = n_frames * net.hop
    if kernel == "auto":
        kernel = "numba" if device.type == "cpu" and latents.dtype == torch.float32 else "torch"
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be auto or one of {tuple(KERNELS)}, got {kernel!r}")
    if not greedy and teacher is None and temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0 <= start_class < net.n_classes:
        raise ValueError(f"start_class must lie in 0..{net.n_classes - 1}, got {start_class}")
    if teacher is not None and (
        teacher.shape != (batch, total) or teacher.min() < 0 or teacher.max() >= net.n_classes
    ):
        raise ValueError(f"teacher must be [B, T_z*hop] = {[batch, total]} classes in 0..{net.n_classes - 1}")
    if lengths is not None and (lengths.shape != (batch,) or int(lengths.min()) < 0 or int(lengths.max()) > total):
        raise ValueError(f"lengths must be [B] with values in 0..T_z*hop={total}")
    n_steps = total if lengths is None or teacher is not None else int(lengths.max())
    frames = None if lengths is None else -(-lengths // net.hop)  # frames each item covers
    sampling = teacher is None and not greedy

    weights = step_weights(net, 1.0 if teacher is not None or greedy else temperature)
    state = step_state(net, batch)
    classes = torch.full((total + 1, batch), start_class, dtype=torch.long, device=device)  # input at step t
    if teacher is not None:
        classes[:total] = teacher.t()
        logits = weights.emb.new_empty(total, batch, net.n_classes)
    per_chunk = max(1, CHUNK_SAMPLES // net.hop)
    for f0 in range(0, -(-n_steps // net.hop), per_chunk):
        f1 = min(n_frames, f0 + per_chunk)
        t0, t1 = f0 * net.hop, min(f1 * net.hop, n_steps)
        cond = net.conditioning_window(latents, g, f0, f1, frames)  # [B, L, G, cols]
        cond[:, :, : net.gate_channels // 2] *= 2.0  # sigmoid form of the tanh (see StepWeights)
        cond = cond.permute(3, 1, 0, 2).contiguous()  # [cols, L, B, G]
        bias = weights.logit_b.expand(t1 - t0, batch, -1)
        if sampling:
            bias = gumbel_like((t1 - t0, batch, net.n_classes), device, generator) + weights.logit_b
        out = logits[t0:t1] if teacher is not None else None
        inp = None if excitation is None else net.excitation_proj(excitation[..., t0:t1]).permute(2, 0, 1).contiguous()
        KERNELS[kernel](weights, state, cond, net.cond_rate, bias, classes, out, t0, t1, inp)
        if progress is not None:
            progress(t1 - t0)
    if teacher is not None:
        return logits.permute(1, 2, 0)
    return classes[1:].t().contiguous()


# ---- step kernels: run steps t0 .. t1-1 over StepWeights / StepState ----------------------------------------------
# Both take cond [cols, L, B, G] (column (t-t0)//cond_rate serves step t) and bias [t1-t0, B, n_classes] (the output
# bias, plus Gumbel noise when sampling); they read the input classes[t] (plus inp [t1-t0, B, R], the projected
# excitation, when given) and write either the argmax into classes[t+1] or, when `logits` [t1-t0, B, n_classes] is
# given, the logits.


def run_torch(
    w: StepWeights, s: StepState, cond: Tensor, cond_rate: int, bias: Tensor, classes: Tensor,
    logits: Tensor | None, t0: int, t1: int, inp: Tensor | None = None,
) -> None:
    """Reference kernel, on any device: per step a gather of the past taps, one batched matmul for their
    contribution to every layer, four preallocated ops per layer, one matmul for all the skip connections."""
    (n_taps, n, r, g), batch, half = w.past.shape, classes.shape[1], w.past.shape[3] // 2
    taps = cond.new_empty(n_taps, n, batch, r)
    pre = cond.new_empty(n, batch, g)  # conditioning + past taps, every layer
    h = cond.new_empty(n, batch, r)  # every layer's input
    gate = cond.new_empty(batch, g)
    z = cond.new_ones(batch, n, half + 1)  # negated gated outputs, then a constant 1
    skip, hidden = cond.new_empty(batch, w.hidden_w.shape[0]), cond.new_empty(batch, w.hidden_w.shape[0])
    out = cond.new_empty(batch, w.logit_w.shape[1])
    # views, made once
    cond_rows, bias_rows = cond.unbind(0), bias.unbind(0)
    class_rows, out_rows = classes.unbind(0), None if logits is None else logits.unbind(0)
    inp_rows = None if inp is None else inp.unbind(0)
    reads, writes, period = s.read_idx.unbind(0), s.write_idx.unbind(0), s.read_idx.shape[0]
    h_rows, pre_rows, cur = h.unbind(0), pre.unbind(0), w.cur.unbind(0)
    res, skip_w = w.res_skip[:, :, :r].unbind(0), w.res_skip[:, :, r:].flatten(0, 1)
    z_gate, z_rows, gate_a, gate_b = z[:, :, :half].unbind(1), z.unbind(1), gate[:, :half], gate[:, half:]
    taps_flat, z_flat = taps.flatten(0, 1), z.flatten(1)
    for t in range(t0, t1):
        p = t % period
        torch.index_select(w.emb, 0, class_rows[t], out=h_rows[0])
        if inp_rows is not None:
            h_rows[0].add_(inp_rows[t - t0])
        torch.index_select(s.queue, 0, reads[p], out=taps_flat)
        torch.baddbmm(cond_rows[(t - t0) // cond_rate], taps[0], w.past[0], out=pre)
        for j in range(1, n_taps):
            torch.baddbmm(pre, taps[j], w.past[j], out=pre)
        for i in range(n):
            torch.addmm(pre_rows[i], h_rows[i], cur[i], out=gate)
            gate.sigmoid_()
            torch.addcmul(gate_b, gate_a, gate_b, value=-2.0, out=z_gate[i])
            if i < n - 1:
                torch.addmm(h_rows[i], z_rows[i], res[i], out=h_rows[i + 1])
        s.queue.index_copy_(0, writes[p], h)
        torch.mm(z_flat, skip_w, out=skip).relu_()
        torch.addmm(w.hidden_b, skip, w.hidden_w, out=hidden).relu_()
        if out_rows is None:
            torch.addmm(bias_rows[t - t0], hidden, w.logit_w, out=out)
            torch.argmax(out, 1, out=class_rows[t + 1])
        else:
            torch.addmm(bias_rows[t - t0], hidden, w.logit_w, out=out_rows[t - t0])


def _tanh(x: float) -> float:
    """float32 tanh as a clamped rational function (Eigen's), vectorisable; |error| < 3e-7."""
    x = min(max(x, np.float32(-7.90531110763549805)), np.float32(7.90531110763549805))
    x2 = x * x
    p = np.float32(-2.76076847742355e-16)
    p = p * x2 + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    q = np.float32(1.19825839466702e-06)
    q = q * x2 + np.float32(1.18534705686654e-04)
    q = q * x2 + np.float32(2.26843463243900e-03)
    q = q * x2 + np.float32(4.89352518554385e-03)
    return x * p / q


def _affine(acc: np.ndarray, x: np.ndarray, w: np.ndarray) -> None:
    """acc [out] += x [in] @ w[:in], plus w[in] (a bias row) when w has in+1 rows."""
    for i in range(x.shape[0]):
        xi, wi = x[i], w[i]
        for o in range(acc.shape[0]):
            acc[o] += xi * wi[o]
    if w.shape[0] > x.shape[0]:
        acc += w[x.shape[0]]


def _run_numba(
    emb, cur, past, res_skip, hidden_w, hidden_b, logit_w, queue, read_idx, write_idx, cond, cond_rate, bias,
    classes, logits, inp, t0, t1, n_threads,
):
    """`run_numba`'s loop over numpy views of StepWeights / StepState; `logits` of length 0 means sampling, `inp`
    of length 0 no excitation.
    Plain Python (and `prange` = range) until `_numba_loop` compiles it."""
    n_layers, n_res, n_gate = cur.shape
    half, n_skip, n_classes = n_gate // 2, res_skip.shape[2] - n_res, logit_w.shape[1]
    n_taps, batch, period = past.shape[0], queue.shape[1], read_idx.shape[0]
    teacher, excited, one_half = logits.shape[0] > 0, inp.shape[0] > 0, np.float32(0.5)
    for thread in prange(n_threads):  # each thread owns the rows thread, thread + n_threads, ...
        hs = np.empty(n_res + n_skip, np.float32)  # layer input | running skip sum
        h = hs[:n_res]
        gate = np.empty(n_gate, np.float32)
        z = np.empty(half, np.float32)
        hidden = np.empty(n_skip, np.float32)
        out = np.empty(n_classes, np.float32)
        for t in range(t0, t1):
            p, c = t % period, (t - t0) // cond_rate
            for b in range(thread, batch, n_threads):
                h[:] = emb[classes[t, b]]
                if excited:
                    h += inp[t - t0, b]
                hs[n_res:] = 0.0
                for l in range(n_layers):
                    gate[:] = cond[c, l, b]
                    for j in range(n_taps):
                        _affine(gate, queue[read_idx[p, j * n_layers + l], b], past[j, l])
                    _affine(gate, h, cur[l])
                    queue[write_idx[p, l], b] = h
                    for o in range(half):  # -z = -tanh(a) sigmoid(b) = -tanh(a) (1 + tanh(b/2)) / 2, gate = [2a | b]
                        z[o] = -_tanh(gate[o] * one_half) * (one_half + one_half * _tanh(gate[half + o] * one_half))
                    _affine(hs, z, res_skip[l])
                hidden[:] = hidden_b
                _affine(hidden, np.maximum(hs[n_res:], np.float32(0.0)), hidden_w)
                out[:] = bias[t - t0, b]
                _affine(out, np.maximum(hidden, np.float32(0.0)), logit_w)
                if teacher:
                    logits[t - t0, b] = out
                else:
                    classes[t + 1, b] = np.argmax(out)


prange = range  # numba.prange once `_numba_loop` has run


@functools.cache
def _numba_loop() -> Callable[..., None]:
    """Import numba and compile the kernel (cached on disk): the helpers are rebound to their compiled versions
    first, so the compiled loop calls them natively."""
    global _tanh, _affine, prange
    import numba

    prange = numba.prange
    _tanh = numba.njit(fastmath=True, cache=True)(_tanh)
    _affine = numba.njit(fastmath=True, cache=True)(_affine)
    return numba.njit(fastmath=True, parallel=True, cache=True)(_run_numba)


def run_numba(
    w: StepWeights, s: StepState, cond: Tensor, cond_rate: int, bias: Tensor, classes: Tensor,
    logits: Tensor | None, t0: int, t1: int, inp: Tensor | None = None,
) -> None:
    """Compiled CPU kernel (numba): the whole loop outside Python, batch rows split over the CPU threads."""
    if cond.device.type != "cpu" or cond.dtype != torch.float32:
        raise ValueError("kernel 'numba' needs float32 tensors on the CPU")
    if logits is None:
        logits = cond.new_empty(0, 0, 0)
    if inp is None:
        inp = cond.new_empty(0, 0, 0)
    arrays = (w.emb, w.cur, w.past, w.res_skip, w.hidden_w, w.hidden_b, w.logit_w, s.queue, s.read_idx, s.write_idx,
              cond, cond_rate, bias.contiguous(), classes, logits, inp)
    import numba

    _numba_loop()(*[a.numpy() if isinstance(a, Tensor) else a for a in arrays], t0, t1,
                  min(classes.shape[1], numba.get_num_threads()))


KERNELS: dict[str, Callable[..., None]] = {"torch": run_torch, "numba": run_numba}
