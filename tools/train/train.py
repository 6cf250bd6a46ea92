#!/usr/bin/env python3
"""Train small byte-level MambaByte models in PyTorch (no mamba_ssm).

Architecture (exactly the toolkit's): byte embedding (256, d); n_layer blocks
``residual = h + residual`` (fp32), ``h = LayerNorm(residual)`` (with bias), ``h = Mixer(h)``;
``norm_f(h + residual)``; ``lm_head``. Mixer = Mamba-1 (d_inner = 2 d, dt_rank = ceil(d/16),
d_state 16, d_conv 4, no in/out_proj bias, conv bias).

The selective scan is a chunked scan: within chunks of T positions a short loop over T runs for
all chunks at once (from a zero state), the cumulative decay inside each chunk is exp(cumsum(delta*A))
(<= 1, cannot overflow), and a loop over the chunks carries the state:
h = H_local + P * h_chunk_start. About T + L/T Python steps instead of L. ``--self_test`` checks it
against the sequential definition (values and gradients, float64).

On a CUDA device (``--scan auto``, the default) the fp32 scan runs instead in this folder's
``scan_cuda.cu`` (forward and backward kernels, states in registers; built once with nvcc, loaded by
ctypes; ``--self_test`` holds it to the same float64 definition). ``--scan chunked`` keeps the
PyTorch scan everywhere.

Output: ``<out_dir>/<name>.safetensors`` with the mamba_ssm names (backbone.embedding.weight,
backbone.layers.{i}.norm.{weight,bias}, backbone.layers.{i}.mixer.*, backbone.norm_f.{weight,bias},
lm_head.weight) and ``<out_dir>/<name>.json`` (config, schedule, losses, held-out bits per byte,
timings, the exact command).

Held-out: the last 5% of the bytes (from offset floor(0.95 n)). Bits per byte are computed over the
whole held-out text, first byte unscored (as the toolkit's bits_per_byte does), with the recurrent
state carried across segments.

    python3 tools/train/train.py --self_test
    python3 tools/train/train.py --preset tiny  --data tinyshakespeare.txt --out_dir out
    python3 tools/train/train.py --preset small --data tinyshakespeare.txt --out_dir out --max_minutes 6
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LN2 = math.log(2.0)


# ----------------------------------------------------------------------------------------------
# Selective scan
# ----------------------------------------------------------------------------------------------
def selective_scan_ref(x, delta, A, B, C, D, h0=None):
    """Sequential definition. x, delta: (b, l, di); A: (di, n); B, C: (b, l, n); D: (di,).
    Returns y (b, l, di) and the final state (b, di, n)."""
    b, l, di = x.shape
    h = x.new_zeros(b, di, A.shape[1]) if h0 is None else h0
    ys = []
    for t in range(l):
        h = torch.exp(delta[:, t, :, None] * A) * h + (delta[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, t]))
    return torch.stack(ys, 1) + x * D, h


def selective_scan_chunked(x, delta, A, B, C, D, chunk=32, h0=None):
    """Same result as selective_scan_ref, with ~chunk + l/chunk sequential steps."""
    b, l, di = x.shape
    n = A.shape[1]
    T = max(1, min(int(chunk), l))
    pad = (-l) % T
    if pad:  # delta = 0 on padding: decay 1, input 0, so the final state is unchanged
        xp, dp, Bp, Cp = (F.pad(t, (0, 0, 0, pad)) for t in (x, delta, B, C))
    else:
        xp, dp, Bp, Cp = x, delta, B, C
    nc = (l + pad) // T
    dA = torch.exp(dp[..., None] * A).view(b, nc, T, di, n)  # exp(delta*A) in (0, 1]
    u = ((dp * xp)[..., None] * Bp[:, :, None, :]).view(b, nc, T, di, n)
    # 1) Inside every chunk from a zero state: a loop over T, all chunks at once.
    # unbind (not u[:, :, t]): its backward stacks the slice gradients once, whereas indexing would
    # build a full-size zero gradient per slice (T times the memory traffic).
    dA_t, u_t = dA.unbind(2), u.unbind(2)
    hs = []
    h = None
    for t in range(T):
        h = u_t[t] if h is None else dA_t[t] * h + u_t[t]
        hs.append(h)
    H = torch.stack(hs, 2)  # (b, nc, T, di, n)
    # 2) Decay from the chunk start to each position: sum_{s<=t} delta_s*A = A * cumsum(delta) <= 0.
    cd = torch.cumsum(dp.view(b, nc, T, di), dim=2)  # (b, nc, T, di), small
    P = torch.exp(cd[..., None] * A)  # (b, nc, T, di, n), in (0, 1]
    # 3) State entering each chunk: a loop over the chunks.
    carry = x.new_zeros(b, di, n) if h0 is None else h0
    P_last, H_last = P[:, :, -1].unbind(1), hs[-1].unbind(1)
    starts = []
    for c in range(nc):
        starts.append(carry)
        carry = P_last[c] * carry + H_last[c]
    S = torch.stack(starts, 1)  # (b, nc, di, n)
    Cc = Cp.reshape(b, nc, T, n)
    # y_t = C_t . (H_t + P_t * S_chunk), as two contractions over n (no full-size sum tensor).
    y = torch.einsum("bctdn,bctn->bctd", H, Cc) + torch.einsum("bctdn,bctn->bctd", P * S[:, :, None], Cc)
    y = y.reshape(b, nc * T, di)
    if pad:
        y = y[:, :l]
    return y + x * D, carry


_CUDA_SCAN: dict = {}


def cuda_scan_lib():
    """scan_cuda.cu built with nvcc for this GPU (once: cached by the source's hash under
    $MB_TRAIN_CACHE or the temp folder) and loaded; None with the reason in _CUDA_SCAN["error"]."""
    if "lib" in _CUDA_SCAN or "error" in _CUDA_SCAN:
        return _CUDA_SCAN.get("lib")
    try:
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scan_cuda.cu")
        major, minor = torch.cuda.get_device_capability()
        key = hashlib.sha256(open(src, "rb").read() + f"sm_{major}{minor}".encode()).hexdigest()[:16]
        so = os.path.join(os.environ.get("MB_TRAIN_CACHE", tempfile.gettempdir()), f"mbt_scan_{key}.so")
        if not os.path.exists(so):
            nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
            tmp = f"{so}.{os.getpid()}.tmp"  # parallel runs: each builds its own, the rename is atomic
            subprocess.run([nvcc, "-O3", "-shared", "-Xcompiler", "-fPIC", f"-arch=sm_{major}{minor}", "-o", tmp,
                            src], check=True, capture_output=True)
            os.replace(tmp, so)
        lib = ctypes.CDLL(so)
        P, I64 = ctypes.c_void_p, ctypes.c_int64
        lib.mbt_scan_fwd.argtypes = [P] * 10 + [I64, I64, I64, ctypes.c_int, P]
        lib.mbt_scan_bwd.argtypes = [P] * 17 + [I64, I64, I64, ctypes.c_int, P]
        lib.mbt_scan_fwd.restype = lib.mbt_scan_bwd.restype = lib.mbt_scan_max_state.restype = ctypes.c_int
        _CUDA_SCAN["lib"], _CUDA_SCAN["max_state"] = lib, lib.mbt_scan_max_state()
    except (OSError, subprocess.CalledProcessError, RuntimeError) as e:
        err = getattr(e, "stderr", b"") or b""
        _CUDA_SCAN["error"] = f"{type(e).__name__}: {e} {err.decode(errors='replace')[-400:]}".strip()
    return _CUDA_SCAN.get("lib")


def _ptr(t):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


class _CudaScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, delta, A, B, C, D, h0, keep_states):
        lib = cuda_scan_lib()
        b, l, d = x.shape
        n = A.shape[1]
        y, last = torch.empty_like(x), x.new_empty(b, d, n)
        hs = x.new_empty(b, l, d, n) if keep_states else None
        stream = ctypes.c_void_p(torch.cuda.current_stream(x.device).cuda_stream)
        rc = lib.mbt_scan_fwd(*map(_ptr, (x, delta, A, B, C, D, h0, y, last, hs)), b, l, d, n, stream)
        if rc != 0:
            raise RuntimeError(f"scan_cuda forward failed ({rc})")
        ctx.save_for_backward(x, delta, A, B, C, D, h0, hs)
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        x, delta, A, B, C, D, h0, hs = ctx.saved_tensors
        lib = cuda_scan_lib()
        b, l, d = x.shape
        n = A.shape[1]
        dy = torch.zeros_like(x) if dy is None else dy.contiguous()
        dlast = None if dlast is None else dlast.contiguous()
        G = (d + 31) // 32
        du, ddelta = torch.empty_like(x), torch.empty_like(x)
        dA_part, dD_part = x.new_empty(b, d, n), x.new_empty(b, d)
        dB_part, dC_part = x.new_empty(b, l, G, n), x.new_empty(b, l, G, n)
        dh0 = None if h0 is None else torch.empty_like(h0)
        stream = ctypes.c_void_p(torch.cuda.current_stream(x.device).cuda_stream)
        rc = lib.mbt_scan_bwd(*map(_ptr, (x, delta, A, B, C, D, h0, hs, dy, dlast, du, ddelta, dA_part, dB_part,
                                          dC_part, dD_part, dh0)), b, l, d, n, stream)
        if rc != 0:
            raise RuntimeError(f"scan_cuda backward failed ({rc})")
        return du, ddelta, dA_part.sum(0), dB_part.sum(2), dC_part.sum(2), dD_part.sum(0), dh0, None


def cuda_scan_usable(x, n) -> bool:
    return x.is_cuda and x.dtype == torch.float32 and cuda_scan_lib() is not None and \
        n <= _CUDA_SCAN["max_state"]


def selective_scan_cuda(x, delta, A, B, C, D, h0=None):
    """selective_scan_ref's result from scan_cuda.cu (fp32 CUDA tensors, d_state <= 16)."""
    ins = [x, delta, A, B, C, D] + ([h0] if h0 is not None else [])
    keep = torch.is_grad_enabled() and any(t.requires_grad for t in ins)
    c = [t.contiguous() for t in (x, delta, A, B, C, D)]
    return _CudaScan.apply(*c, None if h0 is None else h0.contiguous(), keep)


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
@dataclass
class ModelArgs:
    d_model: int = 128
    n_layer: int = 4
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    vocab_size: int = 256
    dt_rank: int = 0  # 0: ceil(d_model / 16)
    norm_eps: float = 1e-5
    chunk: int = 32
    dropout: float = 0.0
    ckpt_scan: bool = False
    norm: str = "layernorm"  # layernorm (MambaByte) | rmsnorm (transformers' Mamba)
    tie: bool = False  # lm_head shares the embedding (transformers' default)
    emb_dropout: float = 0.0  # dropout on the embedding output
    scan: str = "chunked"  # chunked (PyTorch) | cuda (scan_cuda.cu, fp32 on a CUDA device)

    def __post_init__(self):
        if self.dt_rank <= 0:
            self.dt_rank = math.ceil(self.d_model / 16)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model


class Mixer(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.a = a
        di, n, r = a.d_inner, a.d_state, a.dt_rank
        self.in_proj = nn.Linear(a.d_model, 2 * di, bias=False)
        self.conv1d = nn.Conv1d(di, di, a.d_conv, groups=di, bias=True, padding=0)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, di, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(di, 1))
        self.D = nn.Parameter(torch.ones(di))
        self.out_proj = nn.Linear(di, a.d_model, bias=False)

    def forward(self, h, state=None):
        """h: (b, l, d). state: (conv_state (b, di, d_conv-1), ssm_state (b, di, n)) or None."""
        a = self.a
        b, l, _ = h.shape
        di, n, r, k = a.d_inner, a.d_state, a.dt_rank, a.d_conv
        xz = self.in_proj(h)
        x, z = xz.split(di, dim=-1)
        xt = x.transpose(1, 2)
        prev = xt.new_zeros(b, di, k - 1) if state is None else state[0].to(xt.dtype)
        xx = torch.cat([prev, xt], dim=-1)  # causal: k-1 earlier inputs (zeros at the start)
        x = F.silu(F.conv1d(xx, self.conv1d.weight, self.conv1d.bias, groups=di)).transpose(1, 2)
        dt, Bm, Cm = self.x_proj(x).split([r, n, n], dim=-1)
        dt = self.dt_proj(dt)  # before softplus
        sdt = torch.float64 if h.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=h.device.type, enabled=False):
            delta = F.softplus(dt.to(sdt))
            A = -torch.exp(self.A_log.to(sdt))
            args = (x.to(sdt), delta, A, Bm.to(sdt), Cm.to(sdt), self.D.to(sdt))
            h0 = None if state is None else state[1]
            if a.scan == "cuda" and cuda_scan_usable(args[0], n):
                y, last = selective_scan_cuda(*args, h0=h0)
            elif a.ckpt_scan and torch.is_grad_enabled() and h0 is None:
                from torch.utils.checkpoint import checkpoint

                y, last = checkpoint(selective_scan_chunked, *args, a.chunk, use_reentrant=False)
            else:
                y, last = selective_scan_chunked(*args, chunk=a.chunk, h0=h0)
            y = y * F.silu(z.to(sdt))
        out = self.out_proj(y if torch.is_autocast_enabled() else y.to(self.out_proj.weight.dtype))
        return out, (xx[..., -(k - 1):], last)


class RMSNorm(nn.Module):
    """transformers' MambaRMSNorm: x * rsqrt(mean(x^2) + eps) * weight (no bias)."""

    def __init__(self, d: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        dt = x.dtype
        x = x.float() if dt != torch.float64 else x
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dt)


def make_norm(a: ModelArgs):
    return RMSNorm(a.d_model, a.norm_eps) if a.norm == "rmsnorm" else nn.LayerNorm(a.d_model, eps=a.norm_eps)


class Block(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.norm = make_norm(a)
        self.mixer = Mixer(a)


class Backbone(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.embedding = nn.Embedding(a.vocab_size, a.d_model)
        self.layers = nn.ModuleList([Block(a) for _ in range(a.n_layer)])
        self.norm_f = make_norm(a)


class MambaLM(nn.Module):
    """state_dict names are mamba_ssm's: backbone.embedding.weight, backbone.layers.{i}.norm.*,
    backbone.layers.{i}.mixer.*, backbone.norm_f.*, lm_head.weight."""

    def __init__(self, a: ModelArgs):
        super().__init__()
        self.a = a
        self.backbone = Backbone(a)
        self.lm_head = nn.Linear(a.d_model, a.vocab_size, bias=False)
        self.drop = nn.Dropout(a.dropout)
        self.emb_drop = nn.Dropout(a.emb_dropout)
        self.reset_parameters()
        if a.tie:
            self.lm_head.weight = self.backbone.embedding.weight

    @torch.no_grad()
    def reset_parameters(self, dt_min=0.001, dt_max=0.1, dt_floor=1e-4):
        """mamba_ssm's initialisation."""
        a = self.a
        nn.init.normal_(self.backbone.embedding.weight, std=0.02)
        for layer in self.backbone.layers:
            m = layer.mixer
            std = a.dt_rank ** -0.5
            nn.init.uniform_(m.dt_proj.weight, -std, std)
            dt = torch.exp(torch.rand(a.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
            dt = dt.clamp(min=dt_floor)
            m.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            m.A_log.copy_(torch.log(torch.arange(1, a.d_state + 1, dtype=torch.float32)).repeat(a.d_inner, 1))
            m.D.fill_(1.0)
            m.out_proj.weight.div_(math.sqrt(a.n_layer))  # rescale_prenorm_residual

    def forward(self, ids, state=None, return_state=False):
        """ids: (b, l) int64 -> logits (b, l, vocab) [, new state]."""
        bb = self.backbone
        rdt = torch.float64 if bb.embedding.weight.dtype == torch.float64 else torch.float32
        h = self.emb_drop(bb.embedding(ids))
        residual = None
        new_state = []
        for i, layer in enumerate(bb.layers):
            residual = h.to(rdt) if residual is None else h.to(rdt) + residual
            h, st = layer.mixer(layer.norm(residual), None if state is None else state[i])
            h = self.drop(h)
            new_state.append(st)
        h = bb.norm_f(h.to(rdt) + residual)
        logits = self.lm_head(h)
        return (logits, new_state) if return_state else logits


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# Checkpoint writing
# ----------------------------------------------------------------------------------------------
_ST = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64"}


def save_safetensors(tensors: dict, path: str, metadata: dict):
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    tmp = path + ".tmp"
    try:
        from safetensors.torch import save_file

        save_file(tensors, tmp, metadata=metadata)
    except ImportError:  # the format is simple: 8-byte header size, JSON header, raw bytes
        header = {"__metadata__": metadata}
        blobs, off = [], 0
        for k in sorted(tensors):
            t = tensors[k]
            raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
            header[k] = {"dtype": _ST[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
            blobs.append(raw)
            off += len(raw)
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * ((8 - len(hb) % 8) % 8)
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(hb)) + hb)
            for blob in blobs:
                f.write(blob)
    os.replace(tmp, path)


_ST_DTYPES = {name: dt for dt, name in _ST.items()}  # the reader's view of the writer's table


def load_checkpoint(path: str, device, scan: str = "chunked") -> MambaLM:
    """A byte-level checkpoint this script wrote, as an fp32 MambaLM in eval mode. The file is read
    as data (8-byte header size, JSON header, raw little-endian tensors): nothing in it runs."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: not a safetensors file")
    (hlen,) = struct.unpack("<Q", blob[:8])
    if hlen > len(blob) - 8:
        raise ValueError(f"{path}: header of {hlen} bytes in a file of {len(blob)}")
    header = json.loads(blob[8 : 8 + hlen])
    meta = header.pop("__metadata__", {}) or {}
    if "config" not in meta:
        raise ValueError(f"{path}: no model config in its metadata (not written by train.py)")
    c = json.loads(meta["config"])
    a = ModelArgs(d_model=c["d_model"], n_layer=c["n_layer"], d_state=c["d_state"], d_conv=c["d_conv"],
                  expand=c["expand"], dt_rank=c["dt_rank"], vocab_size=c["vocab_size"], norm_eps=c["norm_eps"],
                  norm=meta.get("norm", "layernorm"), tie=bool(c.get("tied", False)), scan=scan)
    base = 8 + hlen
    sd, numel = {}, 0
    for k, v in header.items():
        lo, hi = v["data_offsets"]
        dt = _ST_DTYPES[v["dtype"]]
        n = math.prod(v["shape"])
        if not (0 <= lo <= hi <= len(blob) - base) or hi - lo != n * torch.empty(0, dtype=dt).element_size():
            raise ValueError(f"{path}: tensor {k} does not lie inside the file")
        raw = bytearray(blob[base + lo : base + hi])
        sd[k] = torch.frombuffer(raw, dtype=dt).reshape(v["shape"]).float() if n else \
            torch.zeros(v["shape"], dtype=torch.float32)
        numel += n
    # the model is allocated from the config: it may not claim more than the file holds
    D, E, N, R, V = a.d_model, a.d_inner, a.d_state, a.dt_rank, a.vocab_size
    claimed = V * D * (1 if a.tie else 2) + 2 * D + a.n_layer * (
        2 * D + 2 * E * D + E * (a.d_conv + 1) + (R + 2 * N) * E + E * (R + 1) + E * N + E + D * E)
    if min(D, E, N, R, V, a.n_layer, a.d_conv) < 1 or claimed > numel:
        raise ValueError(f"{path}: its config claims {claimed} parameters, the file holds {numel}")
    m = MambaLM(a)
    m.load_state_dict(sd, strict=not a.tie)
    return m.to(device).eval()


# ----------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def held_out_nats(model: MambaLM, data: np.ndarray, device, segment: int, amp_dtype=None):
    """Sum of -ln p over bytes 1..N-1 of ``data`` (byte 0 unscored), state carried across segments."""
    was_training = model.training
    model.eval()
    ids = torch.from_numpy(data.astype(np.int64)).to(device)[None, :]
    inp, tgt = ids[:, :-1], ids[:, 1:]
    total = torch.zeros((), dtype=torch.float64, device=device)
    state = None
    for s in range(0, inp.shape[1], segment):
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            logits, state = model(inp[:, s : s + segment], state=state, return_state=True)
        total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt[:, s : s + segment].reshape(-1),
                                 reduction="sum").double()
    model.train(was_training)
    return float(total), int(tgt.shape[1])


@torch.no_grad()
def next_byte_rows(model: MambaLM, data: np.ndarray, device, keep, out_dtype, rows=128, warm=512, segment=1024,
                   amp_dtype=None):
    """``keep(logits)`` for the next byte after each of bytes 0..N-2 of ``data``, as one
    (N - 1, ...) tensor. The text runs as ``rows`` slices side by side (a batch, so a GPU is busy:
    one long row would take minutes for a megabyte), each slice after the first starting ``warm``
    bytes early so that its first outputs see that much context; the state is carried across
    segments within a row; short texts get fewer rows (each slice at least 4 x ``warm`` bytes).
    rows=1 is the exact left-to-right pass."""
    was_training = model.training
    model.eval()
    n = len(data) - 1
    rows = max(1, min(rows, n // (4 * warm) if warm else n))  # the warm-ups cost at most a quarter more
    span = -(-n // rows)
    lead = [0] + [warm] * (rows - 1)  # row 0 has no text before it
    width = span + (warm if rows > 1 else 0)
    ids = torch.zeros((rows, width), dtype=torch.int64)
    src = torch.from_numpy(data[:n].astype(np.int64))
    for r in range(rows):
        lo = max(0, r * span - lead[r])
        hi = min(n, (r + 1) * span)
        if hi > lo:
            ids[r, : hi - lo] = src[lo:hi]
    ids = ids.to(device)
    out, state = None, None
    for s in range(0, width, segment):
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            logits, state = model(ids[:, s : s + segment], state=state, return_state=True)
        kept = keep(logits.float())
        if out is None:
            out = torch.empty((n,) + tuple(kept.shape[2:]), dtype=out_dtype, device=device)
        for r in range(rows):  # columns [s, s + seg) of row r are positions lo + s ..; keep those of the row's span
            lo = max(0, r * span - lead[r])
            first, last = max(s, r * span - lo), min(s + kept.shape[1], min(n, (r + 1) * span) - lo)
            if last > first:
                out[lo + first : lo + last] = kept[r, first - s : last - s].to(out_dtype)
    model.train(was_training)
    return out


def teacher_log_probs(teacher: MambaLM, data: np.ndarray, device, amp_dtype=None, **layout):
    """(len(data) - 1, vocab) bf16: row i is the teacher's log-distribution of byte i + 1 after the
    bytes before it (next_byte_rows' layout: ~0.5 GB and seconds for Tiny Shakespeare on a GPU)."""
    return next_byte_rows(teacher, data, device, lambda z: F.log_softmax(z, dim=-1), torch.bfloat16,
                          amp_dtype=amp_dtype, **layout)


def argmax_agreement(model: MambaLM, teacher: MambaLM, data: np.ndarray, device, **layout) -> float:
    """How often the model's most probable next byte is the teacher's, over bytes 1..N-1 of
    ``data`` (fp32): the rate at which the teacher would accept the model's greedy drafts on this
    text."""
    top = lambda z: z.argmax(-1)  # noqa: E731
    a = next_byte_rows(model, data, device, top, torch.int64, **layout)
    b = next_byte_rows(teacher, data, device, top, torch.int64, **layout)
    return float((a == b).double().mean()) if len(a) else 0.0


# ----------------------------------------------------------------------------------------------
# Self test
# ----------------------------------------------------------------------------------------------
def self_test(device) -> int:
    torch.manual_seed(0)
    ok = True
    f64 = torch.float64

    def report(name, err, tol):
        nonlocal ok
        good = err <= tol
        ok &= good
        print(f"  {'ok ' if good else 'BAD'} {name}: {err:.3e} (tol {tol:.0e})", flush=True)

    print("[self_test] chunked scan vs sequential definition (float64)", flush=True)
    for (b, l, di, n, T, with_h0) in [(2, 37, 8, 4, 8, False), (1, 64, 6, 16, 16, True), (3, 5, 4, 3, 32, True),
                                      (2, 50, 5, 16, 7, False)]:
        x = torch.randn(b, l, di, dtype=f64, device=device, requires_grad=True)
        delta = F.softplus(torch.randn(b, l, di, dtype=f64, device=device) + 0.5).requires_grad_()
        A = (-torch.exp(torch.randn(di, n, dtype=f64, device=device) + 1.0)).requires_grad_()
        Bm = torch.randn(b, l, n, dtype=f64, device=device, requires_grad=True)
        Cm = torch.randn(b, l, n, dtype=f64, device=device, requires_grad=True)
        Dv = torch.randn(di, dtype=f64, device=device, requires_grad=True)
        h0 = torch.randn(b, di, n, dtype=f64, device=device, requires_grad=True) if with_h0 else None
        ins = [x, delta, A, Bm, Cm, Dv] + ([h0] if with_h0 else [])
        y1, s1 = selective_scan_ref(x, delta, A, Bm, Cm, Dv, h0)
        y2, s2 = selective_scan_chunked(x, delta, A, Bm, Cm, Dv, chunk=T, h0=h0)
        report(f"values b{b} l{l} di{di} n{n} T{T} h0={with_h0}",
               max(float((y1 - y2).abs().max()), float((s1 - s2).abs().max())), 1e-10)
        gy, gs = torch.randn_like(y1), torch.randn_like(s1)
        g1 = torch.autograd.grad((y1 * gy).sum() + (s1 * gs).sum(), ins)
        g2 = torch.autograd.grad((y2 * gy).sum() + (s2 * gs).sum(), ins)
        report("  gradients", max(float((p - q).abs().max()) for p, q in zip(g1, g2)), 1e-9)

    if device.type == "cuda" and cuda_scan_lib() is None:
        report(f"scan_cuda.cu builds and loads ({_CUDA_SCAN['error']})", 1.0, 0)
    elif device.type == "cuda":
        print("[self_test] scan_cuda.cu (fp32) vs sequential definition (float64); error / max |reference|",
              flush=True)
        for (b, l, di, n, with_h0) in [(2, 37, 8, 4, False), (1, 64, 40, 16, True), (3, 5, 4, 3, True),
                                       (2, 300, 70, 16, False), (1, 1, 33, 16, True), (4, 128, 256, 16, True)]:
            x = torch.randn(b, l, di, dtype=f64, device=device)
            delta = F.softplus(torch.randn(b, l, di, dtype=f64, device=device) - 1.0)
            A = -torch.exp(torch.randn(di, n, dtype=f64, device=device) + 1.0)
            Bm, Cm = torch.randn(b, l, n, dtype=f64, device=device), torch.randn(b, l, n, dtype=f64, device=device)
            Dv = torch.randn(di, dtype=f64, device=device)
            h0 = torch.randn(b, di, n, dtype=f64, device=device) if with_h0 else None
            ins64 = [t.requires_grad_() for t in [x, delta, A, Bm, Cm, Dv] + ([h0] if with_h0 else [])]
            ins32 = [t.detach().float().requires_grad_() for t in ins64]
            y1, s1 = selective_scan_ref(*ins64[:6], h0)
            y2, s2 = selective_scan_cuda(*ins32[:6], h0=ins32[6] if with_h0 else None)
            rel = lambda p, q: float((p.double() - q).abs().max() / q.abs().max().clamp_min(1e-30))  # noqa: E731
            report(f"values b{b} l{l} di{di} n{n} h0={with_h0}", max(rel(y2, y1), rel(s2, s1)), 2e-5)
            gy, gs = torch.randn_like(y1), torch.randn_like(s1)
            g1 = torch.autograd.grad((y1 * gy).sum() + (s1 * gs).sum(), ins64)
            g2 = torch.autograd.grad((y2 * gy.float()).sum() + (s2 * gs.float()).sum(), ins32)
            names = ["x", "delta", "A", "B", "C", "D", "h0"]
            report("  gradients (" + ", ".join(names[: len(g1)]) + ")", max(rel(q, p) for p, q in zip(g1, g2)), 1e-4)
        with torch.no_grad():  # no states kept without gradients; same values
            x, dl = torch.randn(2, 50, 48, device=device), F.softplus(torch.randn(2, 50, 48, device=device))
            A = -torch.exp(torch.randn(48, 16, device=device))
            Bm, Cm, Dv = torch.randn(2, 50, 16, device=device), torch.randn(2, 50, 16, device=device), torch.randn(48, device=device)
            y1, _ = selective_scan_ref(x.double(), dl.double(), A.double(), Bm.double(), Cm.double(), Dv.double())
            y2, _ = selective_scan_cuda(x, dl, A, Bm, Cm, Dv)
            report("no_grad values", float((y2.double() - y1).abs().max() / y1.abs().max()), 2e-5)

    print("[self_test] model: one forward vs segments with carried state; checkpointed scan", flush=True)
    a = ModelArgs(d_model=32, n_layer=2, chunk=8)
    m = MambaLM(a).to(device).double()
    ids = torch.randint(0, 256, (2, 45), device=device)
    with torch.no_grad():
        full = m(ids)
        parts, st = [], None
        for s in range(0, 45, 13):
            lg, st = m(ids[:, s : s + 13], state=st, return_state=True)
            parts.append(lg)
        report("segmented logits", float((full - torch.cat(parts, 1)).abs().max()), 1e-10)
    loss = F.cross_entropy(m(ids).reshape(-1, 256), ids.roll(-1, 1).reshape(-1))
    g1 = torch.autograd.grad(loss, list(m.parameters()))
    m.a.ckpt_scan = True
    loss2 = F.cross_entropy(m(ids).reshape(-1, 256), ids.roll(-1, 1).reshape(-1))
    g2 = torch.autograd.grad(loss2, list(m.parameters()))
    m.a.ckpt_scan = False
    report("checkpointed-scan gradients", max(float((p - q).abs().max()) for p, q in zip(g1, g2)), 1e-10)
    names = set(m.state_dict())
    want = {"backbone.embedding.weight", "backbone.norm_f.weight", "backbone.norm_f.bias", "lm_head.weight",
            "backbone.layers.0.norm.weight", "backbone.layers.0.norm.bias", "backbone.layers.1.mixer.in_proj.weight",
            "backbone.layers.1.mixer.conv1d.weight", "backbone.layers.1.mixer.conv1d.bias",
            "backbone.layers.1.mixer.x_proj.weight", "backbone.layers.1.mixer.dt_proj.weight",
            "backbone.layers.1.mixer.dt_proj.bias", "backbone.layers.1.mixer.A_log", "backbone.layers.1.mixer.D",
            "backbone.layers.1.mixer.out_proj.weight"}
    report("mamba_ssm names present (missing count)", float(len(want - names)), 0)
    report("conv1d weight shape (d_inner,1,4)",
           0.0 if tuple(m.state_dict()["backbone.layers.0.mixer.conv1d.weight"].shape) == (64, 1, 4) else 1.0, 0)
    print(f"[self_test] {'PASSED' if ok else 'FAILED'}", flush=True)
    return 0 if ok else 1


# ----------------------------------------------------------------------------------------------
# Subword data and the Hugging Face layout
# ----------------------------------------------------------------------------------------------
def byte_level_table():
    """GPT-2's bytes_to_unicode(), inverted: character -> byte (byte-level BPE token spelling)."""
    bs = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_byte_lengths(tokenizer_json: str) -> np.ndarray:
    """Bytes each token of a byte-level BPE tokenizer.json spells (added tokens: 0)."""
    j = json.load(open(tokenizer_json, encoding="utf-8"))
    vocab = j["model"]["vocab"]
    table = byte_level_table()
    added = {a["id"] for a in j.get("added_tokens", [])}
    size = max(list(vocab.values()) + list(added) + [-1]) + 1
    out = np.zeros(size, dtype=np.int64)
    for tok, i in vocab.items():
        if i not in added:
            out[i] = sum(1 if ch in table else len(ch.encode("utf-8")) for ch in tok)
    return out


def train_tokenizer(text_bytes: bytes, vocab: int, path: str):
    """A byte-level BPE (GPT-2 style, all 256 bytes in the alphabet) trained with the tokenizers
    library on the training bytes only."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    lines = text_bytes.decode("utf-8", errors="replace").splitlines(keepends=True)
    tok.train_from_iterator((("".join(lines[i:i + 1000])) for i in range(0, len(lines), 1000)), trainer=trainer)
    tok.save(path)


def subword_data(args, cfg, raw, sel, split, val_np, name):
    """Token ids of [0, sel), [sel, split) and the held-out bytes; the tokenizer.json used; the bytes
    each token spells."""
    out_tok = os.path.join(args.out_dir, name + ".tokenizer.json")
    os.makedirs(args.out_dir, exist_ok=True)
    parts = [raw[:sel].tobytes(), raw[sel:split].tobytes(), raw[split:].tobytes()]
    if args.token_files:
        if not args.tokenizer:
            raise SystemExit("error: --token_files needs --tokenizer")
        tok_path = args.tokenizer
        ids = [np.fromfile(f"{args.token_files}.{k}.i32", dtype="<i4") for k in ("train", "select", "heldout")]
    else:
        from tokenizers import Tokenizer

        if args.tokenizer:
            tok_path = args.tokenizer
        else:
            train_tokenizer(parts[0], cfg["tokenizer_vocab"], out_tok)
            tok_path = out_tok
        tok = Tokenizer.from_file(tok_path)
        ids = [np.array(tok.encode(p.decode("utf-8", errors="replace"), add_special_tokens=False).ids,
                        dtype=np.int64) for p in parts]
    tok_len = token_byte_lengths(tok_path)
    for k, (p, i) in enumerate(zip(parts, ids)):
        spelled = int(tok_len[i].sum())
        if spelled != len(p):
            print(f"[{name}] warning: part {k}: tokens spell {spelled} bytes of {len(p)}", flush=True)
    print(f"[{name}] tokenizer {tok_path}: {len(tok_len)} tokens; train {len(ids[0])} tokens "
          f"({len(parts[0]) / max(1, len(ids[0])):.2f} bytes/token)", flush=True)
    return tok_path, ids, tok_len


def save_hf(sd: dict, a: ModelArgs, out_dir: str, tok_path, log: dict):
    """A folder transformers' MambaForCausalLM loads: config.json, model.safetensors (its names:
    backbone.embeddings.weight, ...), tokenizer.json, and train.json (the training log)."""
    if a.norm != "rmsnorm":
        raise SystemExit("error: --hf_out needs --norm rmsnorm (transformers' Mamba uses RMSNorm)")
    os.makedirs(out_dir, exist_ok=True)
    tensors = {k.replace("backbone.embedding.", "backbone.embeddings."): v for k, v in sd.items()}
    save_safetensors(tensors, os.path.join(out_dir, "model.safetensors"), {"format": "pt"})
    config = {"architectures": ["MambaForCausalLM"], "model_type": "mamba", "vocab_size": a.vocab_size,
              "hidden_size": a.d_model, "intermediate_size": a.d_inner, "state_size": a.d_state,
              "num_hidden_layers": a.n_layer, "layer_norm_epsilon": a.norm_eps, "conv_kernel": a.d_conv,
              "expand": a.expand, "time_step_rank": a.dt_rank, "use_bias": False, "use_conv_bias": True,
              "hidden_act": "silu", "residual_in_fp32": True, "tie_word_embeddings": a.tie,
              "rescale_prenorm_residual": False, "use_cache": True, "torch_dtype": "float32",
              "bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    if tok_path:
        import shutil

        shutil.copyfile(tok_path, os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "train.json"), "w") as f:
        json.dump(log, f, indent=2)
        f.write("\n")


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------
PRESETS = {
    # Tiny Shakespeare is small (1 MB): both models overfit within a few epochs (a first run of
    # 1270 steps reached train 0.64 bits/byte but held-out 3.8 for small; held-out was best near step
    # 300-500), so the schedules are short, with dropout, and the best checkpoint on a selection split
    # is kept. Step counts are upper bounds: --max_minutes with --fit_steps_to_time lowers them.
    # Measured held-out bits/byte on the H200: tiny (800 steps, dropout 0.1) 2.258; small 700 steps
    # dropout 0.2 -> 2.314 (best step 400), 450/0.2 -> 2.303, 450/0.3 -> 2.299 (still improving).
    # Measured on one H200 (torch 2.11, bf16 autocast): tiny ~59 ms/step, small (512x5) ~171 ms/step.
    # 0.77M params, fp32 file 3.1 MB
    "tiny": dict(d_model=128, n_layer=6, batch_size=32, seq_len=512, steps=800, lr=2e-3, warmup=100,
                 dropout=0.1, save_dtype="float32", chunk=32, ckpt_scan=False),
    # 8.06M params, bf16 file 15.4 MiB (files that come back from the GPU machine must be < 16 MiB).
    # Wide and shallow on purpose: the scan's cost per byte grows with n_layer * d_inner while the
    # parameters grow with n_layer * d_model^2.
    "small": dict(d_model=448, n_layer=6, batch_size=32, seq_len=512, steps=600, lr=1.5e-3, warmup=100,
                  dropout=0.3, save_dtype="bfloat16", chunk=32, ckpt_scan=False, emb_dropout=0.1, ema=0.99),
    # For speculative decoding (tools/device/train_spec.sh). `small` above gets a sibling to pick from
    # by the selection split: deeper and narrower, 6.7M params, bf16 file 13 MiB.
    "small_deep": dict(d_model=320, n_layer=10, batch_size=32, seq_len=512, steps=600, lr=1.5e-3, warmup=100,
                       dropout=0.3, save_dtype="bfloat16", chunk=32, ckpt_scan=False, emb_dropout=0.1, ema=0.99),
    # The target: clearly larger than small (22M params) and deep (24 layers: decoding one byte is 24
    # layers of small kernels on a GPU, where verifying 8 positions costs about what one step does).
    # 600 steps: ~0.17 s each alone on an H200 with the CUDA scan (0.66 s with the chunked one).
    "target": dict(d_model=384, n_layer=24, batch_size=32, seq_len=512, steps=600, lr=1e-3, warmup=60,
                   dropout=0.25, save_dtype="bfloat16", chunk=32, ckpt_scan=False, emb_dropout=0.1, ema=0.99),
    # The byte-level drafter: 2 layers, so a drafting step costs a small part of a target step.
    "draft_bytes": dict(d_model=256, n_layer=2, batch_size=32, seq_len=512, steps=1000, lr=2e-3, warmup=100,
                        dropout=0.1, save_dtype="float32", chunk=32, ckpt_scan=False),
    # The subword drafter (the paper's kind): a transformers-format Mamba (RMSNorm, tied embeddings)
    # over a byte-level BPE of 2048 tokens trained on the training bytes; seq_len counts tokens.
    "draft_subword": dict(d_model=256, n_layer=2, batch_size=32, seq_len=256, steps=1000, lr=2e-3, warmup=100,
                          dropout=0.1, save_dtype="float32", chunk=32, ckpt_scan=False, norm="rmsnorm", tie=True,
                          tokenizer_vocab=2048),
}
DEFAULTS = dict(ema=0.0, d_model=128, n_layer=4, batch_size=16, seq_len=256, steps=1000, lr=1e-3, warmup=100,
                dropout=0.0, save_dtype="float32", chunk=16, ckpt_scan=False, emb_dropout=0.0, norm="layernorm",
                tie=False, tokenizer_vocab=0)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS) + ["custom"], default="custom")
    p.add_argument("--data", help="training text (bytes); the last 5%% is held out")
    p.add_argument("--out_dir", default=".")
    p.add_argument("--name", default=None, help="output base name (default mambabyte_<preset>_shakespeare)")
    for k in ("d_model", "n_layer", "batch_size", "seq_len", "steps", "warmup", "chunk", "tokenizer_vocab"):
        p.add_argument("--" + k, type=int, default=None)
    for k in ("lr", "dropout", "emb_dropout"):
        p.add_argument("--" + k, type=float, default=None)
    p.add_argument("--norm", choices=["layernorm", "rmsnorm"], default=None)
    p.add_argument("--tie", choices=["on", "off"], default=None, help="lm_head shares the embedding")
    p.add_argument("--tokenizer", default=None,
                   help="subword model: an existing tokenizer.json (else one is trained when tokenizer_vocab > 0)")
    p.add_argument("--token_files", default=None,
                   help="subword model without the tokenizers library: PREFIX.{train,select,heldout}.i32 hold the "
                        "token ids of the three byte ranges (little-endian int32), with --tokenizer for the bytes")
    p.add_argument("--hf_out", default=None,
                   help="also write a Hugging Face folder (config.json, model.safetensors in transformers' "
                        "MambaForCausalLM names, tokenizer.json) here")
    p.add_argument("--extra_data", nargs="+", default=None,
                   help="more training text (byte-level models): files joined by newlines and sampled beside the "
                        "--data training split; never part of the selection split or the held-out text")
    p.add_argument("--extra_fraction", type=float, default=0.5,
                   help="with --extra_data: the share of each batch's rows drawn from it")
    p.add_argument("--teacher", default=None,
                   help="a byte-level checkpoint written by this script (e.g. the speculative target): the run "
                        "learns the teacher's next-byte distributions over the training text (distillation, so a "
                        "drafter agrees with its target more often) and reports how often its most probable byte "
                        "is the teacher's")
    p.add_argument("--distill_weight", type=float, default=0.9,
                   help="with --teacher: the share of the loss that is cross-entropy against the teacher's "
                        "distribution (the rest: against the text's bytes); 0 trains on the bytes alone")
    p.add_argument("--save_dtype", choices=["float32", "bfloat16"], default=None)
    p.add_argument("--ckpt_scan", choices=["on", "off"], default=None, help="recompute the scan in backward")
    p.add_argument("--scan", choices=["auto", "cuda", "chunked"], default="auto",
                   help="the selective scan: scan_cuda.cu's kernels (fp32, CUDA) or the chunked PyTorch scan; "
                        "auto: cuda on a CUDA device when nvcc can build it")
    p.add_argument("--min_lr_ratio", type=float, default=0.1)
    p.add_argument("--weight_decay", type=float, default=0.1)
    p.add_argument("--grad_clip", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--ema", type=float, default=None,
                   help="also keep an exponential moving average of the weights with this decay (e.g. 0.99); "
                        "each evaluation scores both, and the better one on the selection split can be kept")
    p.add_argument("--max_minutes", type=float, default=None,
                   help="wall-clock budget (from start) for training; then evaluate and save anyway")
    p.add_argument("--fit_steps_to_time", action="store_true",
                   help="after a short timing window (inside warmup), lower the planned steps so the cosine "
                        "schedule ends within --max_minutes (the final step count is logged)")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=["auto", "on", "off"], default="auto", help="bf16 autocast (auto: on for CUDA)")
    p.add_argument("--log_every", type=int, default=50)
    p.add_argument("--eval_every", type=int, default=100,
                   help="evaluate the selection split every N steps and keep the best weights (0: keep the last)")
    p.add_argument("--select_from", type=float, default=0.93,
                   help="bytes [select_from*n, 0.95*n) form the selection split (0.95: none)")
    p.add_argument("--eval_segment", type=int, default=8192)
    p.add_argument("--eval_limit", type=int, default=0, help="score only the first N held-out bytes (tests)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--self_test", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    t_start = time.time()
    args = parse_args(argv)
    command = "python3 " + " ".join(shlex.quote(x) for x in ([sys.argv[0]] + (sys.argv[1:] if argv is None else argv)))
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.self_test:
        return self_test(device)
    if not args.data:
        print("error: --data is required", file=sys.stderr)
        return 2
    for path in [args.data] + (args.extra_data or []):
        if not os.path.isfile(path):
            print(f"error: {path}: no such file", file=sys.stderr)
            return 2

    cfg = dict(DEFAULTS)
    cfg.update(PRESETS.get(args.preset, {}))
    for k in list(cfg):
        v = getattr(args, k, None)
        if v is not None:
            cfg[k] = (v == "on") if k in ("ckpt_scan", "tie") else v
    name = args.name or f"mambabyte_{args.preset}_shakespeare"
    use_amp = (args.amp == "on") or (args.amp == "auto" and device.type == "cuda")
    amp_dtype = torch.bfloat16 if use_amp else None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # Data
    raw = np.fromfile(args.data, dtype=np.uint8)
    n = len(raw)
    split = int(n * 0.95)
    sel = int(n * args.select_from)  # [sel, split): validation for picking the best checkpoint
    train_np, sel_np, val_np = raw[:sel], raw[sel:split], raw[split:]
    if args.eval_limit:
        val_np = val_np[: args.eval_limit]
    L, Bsz = cfg["seq_len"], cfg["batch_size"]
    # Subword: the three byte ranges tokenized apart (no token spans a boundary); bits per byte divide
    # by the bytes the scored tokens spell.
    vocab_size, tok_path, tok_len = 256, None, None
    val_bytes = len(val_np)
    if cfg["tokenizer_vocab"] or args.tokenizer or args.token_files:
        tok_path, (train_np, sel_np, val_np), tok_len = subword_data(args, cfg, raw, sel, split, val_np, name)
        vocab_size = len(tok_len)
        if args.eval_limit:  # tests: a shorter held-out (in tokens)
            val_np = val_np[: args.eval_limit]
    train_t = torch.from_numpy(train_np.astype(np.int64)).to(device)
    data_gen = torch.Generator().manual_seed(args.seed + 1)
    arangeL = torch.arange(L + 1)
    n_train = len(train_np)

    def per_byte(nats_scored, part):
        """bits per byte of `part` (tokens or bytes) from the nats of its tokens 1..N-1"""
        nbytes = int(tok_len[part[1:]].sum()) if tok_len is not None else len(part) - 1
        return nats_scored / max(1, nbytes) / LN2

    # Extra training text: a fixed number of each batch's rows come from it (the rest from --data).
    extra_t, n_extra_rows, extra_log = None, 0, []
    if args.extra_data:
        if tok_len is not None:
            print("error: --extra_data is for byte-level models", file=sys.stderr)
            return 2
        if not 0.0 < args.extra_fraction < 1.0:
            print("error: --extra_fraction must be between 0 and 1", file=sys.stderr)
            return 2
        parts = []
        for path in args.extra_data:
            b = np.fromfile(path, dtype=np.uint8)
            extra_log.append({"path": os.path.abspath(path), "bytes": int(len(b)),
                              "sha256": hashlib.sha256(b.tobytes()).hexdigest()})
            parts += [b, np.frombuffer(b"\n", dtype=np.uint8)]
        extra_np = np.concatenate(parts)
        if len(extra_np) < L + 2:
            print(f"error: --extra_data holds {len(extra_np)} bytes, fewer than seq_len + 2", file=sys.stderr)
            return 2
        extra_t = torch.from_numpy(extra_np.astype(np.int64)).to(device)
        n_extra_rows = min(Bsz - 1, max(1, round(Bsz * args.extra_fraction)))

    def get_batch():
        """inputs, next bytes, and the rows' offsets into the training bytes"""
        off = torch.randint(0, n_train - L - 1, (Bsz - n_extra_rows,), generator=data_gen)
        seq = train_t[(off[:, None] + arangeL).to(device)]
        if n_extra_rows:
            eoff = torch.randint(0, len(extra_t) - L - 1, (n_extra_rows,), generator=data_gen)
            seq = torch.cat([seq, extra_t[(eoff[:, None] + arangeL).to(device)]])
        return seq[:, :-1], seq[:, 1:], off


    # Model
    torch.manual_seed(args.seed)
    scan = "chunked"
    if args.scan != "chunked" and device.type == "cuda":
        scan = "cuda" if cuda_scan_lib() is not None else "chunked"
        if scan == "chunked":
            print(f"[{name}] scan_cuda.cu unavailable, the chunked scan runs: {_CUDA_SCAN['error']}", flush=True)
            if args.scan == "cuda":
                return 1
    elif args.scan == "cuda":
        print("error: --scan cuda needs a CUDA device", file=sys.stderr)
        return 2
    # Distillation: the teacher's distributions over the training bytes, computed once (bf16, ~0.5 GB
    # for Tiny Shakespeare), so a step costs what it costs without a teacher.
    teacher, teacher_lp = None, None
    if args.teacher:
        if tok_len is not None or args.extra_data:
            print("error: --teacher is for byte-level models trained on --data alone", file=sys.stderr)
            return 2
        if not 0.0 <= args.distill_weight <= 1.0:
            print("error: --distill_weight must be between 0 and 1", file=sys.stderr)
            return 2
        try:
            teacher = load_checkpoint(args.teacher, device, scan)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            print(f"error: --teacher {args.teacher}: {e}", file=sys.stderr)
            return 2
        if teacher.a.vocab_size != vocab_size:
            print(f"error: --teacher has {teacher.a.vocab_size} outputs, not {vocab_size}", file=sys.stderr)
            return 2
        t_t = time.time()
        teacher_lp = teacher_log_probs(teacher, train_np, device, amp_dtype)
        print(f"[{name}] teacher {args.teacher}: distributions over {teacher_lp.shape[0]} training bytes in "
              f"{time.time()-t_t:.1f}s; distill_weight {args.distill_weight}", flush=True)
    arangeL0 = torch.arange(L, device=device)
    torch.manual_seed(args.seed)  # the same initial weights with or without a teacher
    margs = ModelArgs(d_model=cfg["d_model"], n_layer=cfg["n_layer"], chunk=cfg["chunk"], dropout=cfg["dropout"],
                      ckpt_scan=cfg["ckpt_scan"], vocab_size=vocab_size, norm=cfg["norm"], tie=cfg["tie"],
                      emb_dropout=cfg["emb_dropout"], scan=scan)
    model = MambaLM(margs).to(device)
    n_params = count_params(model)
    decay, no_decay = [], []
    for pn, p in model.named_parameters():
        (no_decay if (p.ndim < 2 or pn.endswith(".A_log") or pn.endswith(".D") or pn.endswith(".bias")) else decay).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = None
    if device.type == "cuda":
        try:
            opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=(0.9, 0.95), eps=1e-8, fused=True)
        except (TypeError, RuntimeError):
            opt = None
    if opt is None:
        opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=(0.9, 0.95), eps=1e-8)

    planned = cfg["steps"]
    total_steps = planned
    warmup = cfg["warmup"]
    min_lr = cfg["lr"] * args.min_lr_ratio

    def lr_at(step):
        if step < warmup:
            return cfg["lr"] * (step + 1) / warmup
        prog = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr + 0.5 * (cfg["lr"] - min_lr) * (1.0 + math.cos(math.pi * prog))

    deadline = t_start + args.max_minutes * 60.0 if args.max_minutes else None
    print(f"[{name}] device={device} amp={use_amp} params={n_params} ({n_params/1e6:.2f}M) cfg={json.dumps(cfg)} "
          f"train_bytes={split} held_out_bytes={len(val_np)}", flush=True)

    log = {"name": name, "command": command, "preset": args.preset, "config": cfg, "model_args": asdict(margs),
           "params": n_params, "seed": args.seed, "data": {"path": os.path.abspath(args.data), "bytes": n,
           "sha256": hashlib.sha256(raw.tobytes()).hexdigest(), "held_out_offset": split,
           "held_out_bytes": int(len(val_np)), "held_out_rule": "bytes[floor(0.95*n):], first byte unscored",
           "extra": extra_log, "extra_rows_per_batch": n_extra_rows,
           "train_bytes": int(sel), "selection_bytes": int(len(sel_np)),
           "selection_rule": f"bytes[floor({args.select_from}*n):floor(0.95*n)]: not trained on; picks the "
                             "best checkpoint (every --eval_every steps); the held-out text is never looked at "
                             "before the end"},
           "optimizer": {"type": "AdamW", "betas": [0.9, 0.95], "weight_decay": args.weight_decay,
                         "grad_clip": args.grad_clip, "min_lr_ratio": args.min_lr_ratio, "warmup": warmup},
           "env": {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
                   "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None, "amp_bf16": use_amp},
           "train_curve": [], "val_curve": []}

    params = [p for p in model.parameters() if p.requires_grad]
    ema = [p.detach().float().clone() for p in params] if cfg["ema"] else None
    model.train()
    step = 0
    t_loop = time.time()
    loss_acc = torch.zeros((), device=device)
    loss_n = 0
    calib = (20, 60)
    t_calib = None
    stopped_early = False
    last_loss = float("nan")
    best = (float("inf"), 0, None)
    while step < total_steps:
        if deadline is not None and time.time() > deadline:
            stopped_early = True
            print(f"[{name}] --max_minutes reached at step {step}/{total_steps}", flush=True)
            break
        lr = lr_at(step)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y, off = get_batch()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model(x)
        flat = logits.float().reshape(-1, logits.shape[-1])
        loss = F.cross_entropy(flat, y.reshape(-1))  # what is logged: comparable with or without a teacher
        objective = loss
        if teacher_lp is not None and args.distill_weight > 0:
            soft = teacher_lp[off.to(device)[:, None] + arangeL0].float().exp().reshape(flat.shape)
            objective = (1.0 - args.distill_weight) * loss + args.distill_weight * F.cross_entropy(flat, soft)
        opt.zero_grad(set_to_none=True)
        objective.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.step()
        if ema is not None:
            with torch.no_grad():
                torch._foreach_mul_(ema, cfg["ema"])
                torch._foreach_add_(ema, [p.detach().float() for p in params], alpha=1.0 - cfg["ema"])
        loss_acc += loss.detach()
        loss_n += 1
        step += 1

        if step == calib[0] or step == calib[1]:
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step == calib[0]:
                t_calib = time.time()
            else:
                rate = (time.time() - t_calib) / (calib[1] - calib[0])
                log["sec_per_step_calibrated"] = rate
                if deadline is not None and args.fit_steps_to_time:
                    fit = step + int(max(0.0, deadline - time.time()) / rate * 0.95)
                    if fit < total_steps:
                        print(f"[{name}] {rate*1000:.1f} ms/step: planned steps {total_steps} -> {fit} to fit "
                              f"--max_minutes {args.max_minutes}", flush=True)
                        total_steps = max(step + 1, fit)
                    else:
                        print(f"[{name}] {rate*1000:.1f} ms/step: {total_steps} steps fit the budget", flush=True)
                    log["steps_fitted_to_time"] = total_steps

        if step % args.log_every == 0 or step == total_steps:
            last_loss = float(loss_acc) / max(1, loss_n)
            el = time.time() - t_loop
            print(f"[{name}] step {step}/{total_steps} loss {last_loss:.4f} ({last_loss/LN2:.3f} bits) lr {lr:.2e} "
                  f"{el/step*1000:.0f} ms/step elapsed {time.time()-t_start:.0f}s", flush=True)
            log["train_curve"].append([step, round(last_loss, 5), round(time.time() - t_start, 1)])
            loss_acc.zero_()
            loss_n = 0
        if len(sel_np) > 1 and args.eval_every and (step % args.eval_every == 0 or step == total_steps):
            snats, sn = held_out_nats(model, sel_np, device, args.eval_segment, amp_dtype)
            sbpb = per_byte(snats, sel_np)
            better = sbpb < best[0]
            if better:
                best = (sbpb, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
            print(f"[{name}] step {step} selection-split bits/byte {sbpb:.4f}{' (best)' if better else ''}", flush=True)
            log["val_curve"].append([step, round(sbpb, 4)])
            if ema is not None:  # the averaged weights, scored the same way
                raw_w = [p.detach().clone() for p in params]
                with torch.no_grad():
                    for p, e in zip(params, ema):
                        p.copy_(e)
                enats, _ = held_out_nats(model, sel_np, device, args.eval_segment, amp_dtype)
                ebpb = per_byte(enats, sel_np)
                if ebpb < best[0]:
                    best = (ebpb, f"{step} (ema)", {k: v.detach().clone() for k, v in model.state_dict().items()})
                    print(f"[{name}] step {step} selection-split bits/byte {ebpb:.4f} with the EMA weights (best)",
                          flush=True)
                log.setdefault("val_curve_ema", []).append([step, round(ebpb, 4)])
                with torch.no_grad():
                    for p, r in zip(params, raw_w):
                        p.copy_(r)

    if device.type == "cuda":
        torch.cuda.synchronize()
    if step == 0 and total_steps > 0:  # an untrained checkpoint would pass for a model
        print(f"error: no training step fit in --max_minutes {args.max_minutes} (the set-up took "
              f"{t_loop - t_start:.0f}s)", file=sys.stderr)
        return 1
    train_time = time.time() - t_loop
    log.update(steps_planned=planned, steps_schedule=total_steps, steps_done=step, stopped_early=stopped_early,
               train_seconds=round(train_time, 1), final_train_loss_nats=last_loss,
               tokens_seen=step * Bsz * L)

    if best[2] is not None:
        print(f"[{name}] best checkpoint: step {best[1]} (selection split {best[0]:.4f} bits/byte)", flush=True)
        model.load_state_dict(best[2])
        log.update(best_step=best[1], best_selection_bits_per_byte=best[0])
    # Held-out bits per byte over the whole held-out text, fp32 compute.
    t_eval = time.time()
    model.eval()
    nats, scored = held_out_nats(model, val_np, device, args.eval_segment)
    bpb_trained = per_byte(nats, val_np)
    save_dtype = torch.bfloat16 if cfg["save_dtype"] == "bfloat16" else torch.float32
    sd = {k: v.detach().to(save_dtype).contiguous() for k, v in model.state_dict().items()
          if not (margs.tie and k == "lm_head.weight")}
    if save_dtype != torch.float32:  # the numbers a loader of the saved file will see
        model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=not margs.tie)
        nats_s, _ = held_out_nats(model, val_np, device, args.eval_segment)
        bpb_saved = per_byte(nats_s, val_np)
    else:
        bpb_saved = bpb_trained
    if teacher is not None:  # how often greedy drafts would be accepted (the selection split chooses drafters)
        for part, data_np in (("selection", sel_np), ("held_out", val_np)):
            if len(data_np) > 1:
                log[f"teacher_agreement_{part}"] = round(argmax_agreement(model, teacher, data_np, device), 5)
        log.update(teacher=os.path.abspath(args.teacher), distill_weight=args.distill_weight)
        print(f"[{name}] agreement with the teacher's most probable byte: selection "
              f"{log.get('teacher_agreement_selection')}, held-out {log.get('teacher_agreement_held_out')}",
              flush=True)
    log.update(held_out_scored_bytes=scored, held_out_bits_per_byte=bpb_saved,
               held_out_bits_per_byte_fp32_weights=bpb_trained, eval_seconds=round(time.time() - t_eval, 1),
               save_dtype=cfg["save_dtype"])
    print(f"[{name}] held-out bits/byte: {bpb_saved:.4f} (saved {cfg['save_dtype']} weights), "
          f"{bpb_trained:.4f} (fp32 weights); {scored} bytes scored; eval {time.time()-t_eval:.1f}s", flush=True)

    os.makedirs(args.out_dir, exist_ok=True)
    st_path = os.path.join(args.out_dir, name + ".safetensors")
    meta = {"format": "pt", "architecture": "mambabyte", "norm": margs.norm,
            "config": json.dumps({"d_model": margs.d_model, "n_layer": margs.n_layer, "d_state": margs.d_state,
                                  "d_conv": margs.d_conv, "expand": margs.expand, "dt_rank": margs.dt_rank,
                                  "vocab_size": margs.vocab_size, "norm_eps": margs.norm_eps, "tied": margs.tie}),
            "held_out_bits_per_byte": f"{bpb_saved:.4f}"}
    save_safetensors(sd, st_path, meta)
    log.update(checkpoint=os.path.basename(st_path), checkpoint_bytes=os.path.getsize(st_path))
    if tok_path is not None:
        log.update(tokenizer=tok_path, vocab_size=vocab_size, held_out_tokens=int(len(val_np)),
                   held_out_bytes_scored=int(tok_len[val_np[1:]].sum()),
                   bits_per_byte_rule="nats of held-out tokens 1..N-1 / the bytes they spell / ln 2")
    if args.hf_out:
        save_hf(sd, margs, args.hf_out, tok_path, log)
        log.update(hf_folder=args.hf_out)
    log.update(total_seconds=round(time.time() - t_start, 1))
    with open(os.path.join(args.out_dir, name + ".json.tmp"), "w") as f:
        json.dump(log, f, indent=2)
        f.write("\n")
    os.replace(os.path.join(args.out_dir, name + ".json.tmp"), os.path.join(args.out_dir, name + ".json"))
    print(f"[{name}] wrote {st_path} ({os.path.getsize(st_path)} bytes); steps {step}; "
          f"total {time.time()-t_start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
