"""An independent float64 re-implementation of the original MambaByte scripts' extractions.

The model is built from torch.nn modules named as the original's (mambabyte.layers.{i}.mixer.*),
run in float64 with a plain sequential selective scan, and read with forward hooks attached exactly
as the original's visualization_utils does (module-name substring, output.squeeze(0), nonlinearity),
including its quirks: blocks use a fused add+norm (so `norm` hooks never fire), conv1d is
nn.Conv1d with padding d_conv - 1 on both sides, and `log_probs` hold probabilities.

Usage: python3 original_hooks.py <checkpoint.pt> <job.json>; prints the record as a pickle path
comparison report (JSON) against the toolkit's pickle named in the job.
"""
import json
import math
import pickle
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F


class Mixer(nn.Module):
    def __init__(self, d_model, d_state, d_conv, expand):
        super().__init__()
        d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.d_state = d_state
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv1d = nn.Conv1d(d_inner, d_inner, d_conv, groups=d_inner, padding=d_conv - 1)
        self.act = nn.SiLU()
        self.x_proj = nn.Linear(d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, d_inner, bias=True)
        self.A_log = nn.Parameter(torch.zeros(d_inner, d_state))
        self.D = nn.Parameter(torch.ones(d_inner))
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, h):  # (1, L, d_model), the original's disable_optimizations path
        L = h.shape[1]
        xz = self.in_proj(h).transpose(1, 2)  # (1, 2D, L)
        x, z = xz.chunk(2, dim=1)
        x = self.act(self.conv1d(x)[..., :L])
        x_dbl = self.x_proj(x.transpose(1, 2).reshape(L, -1))  # (L, R + 2N)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.softplus(self.dt_proj(dt.reshape(1, L, -1)))[0]  # (L, D)
        A = -torch.exp(self.A_log)
        u = x[0].T  # (L, D)
        state = torch.zeros_like(A)
        ys = []
        for t in range(L):
            state = torch.exp(delta[t][:, None] * A) * state + (delta[t] * u[t])[:, None] * B[t][None, :]
            ys.append(state @ C[t] + self.D * u[t])
        y = torch.stack(ys) * F.silu(z[0].T)
        return self.out_proj(y[None])


class Block(nn.Module):
    def __init__(self, d_model, **kw):
        super().__init__()
        self.mixer = Mixer(d_model, **kw)
        self.norm = nn.LayerNorm(d_model, eps=1e-5)

    def forward(self, h, residual):
        residual = h if residual is None else h + residual
        # Fused add+norm: the LayerNorm module itself is never called (its hooks never fire).
        normed = F.layer_norm(residual, residual.shape[-1:], self.norm.weight, self.norm.bias, 1e-5)
        return self.mixer(normed), residual


class Backbone(nn.Module):
    def __init__(self, d_model, n_layer, **kw):
        super().__init__()
        self.token_embedding = nn.Embedding(256, d_model)
        self.layers = nn.ModuleList([Block(d_model, **kw) for _ in range(n_layer)])
        self.final_norm = nn.LayerNorm(d_model, eps=1e-5)

    def forward(self, ids):
        h, residual = self.token_embedding(ids), None
        for layer in self.layers:
            h, residual = layer(h, residual)
        return F.layer_norm(h + residual, h.shape[-1:], self.final_norm.weight, self.final_norm.bias, 1e-5)


class LM(nn.Module):
    def __init__(self, d_model, n_layer, **kw):
        super().__init__()
        self.mambabyte = Backbone(d_model, n_layer, **kw)
        self.lm_head = nn.Linear(d_model, 256, bias=False)
        self.outputs = {}

    def forward(self, ids):
        return self.lm_head(self.mambabyte(ids))


NONLINEARITIES = {
    None: lambda t: t, "linear": lambda t: t, "softplus": F.softplus, "tanh": torch.tanh,
    "relu": F.relu, "gelu": F.gelu, "silu": F.silu, "swish": F.silu, "elu": F.elu,
}


def attach(model, module_id, layers, nonlinearity):
    fn = NONLINEARITIES[nonlinearity]
    model.outputs[module_id] = {}
    for name, module in model.named_modules():
        try:
            idx = int(name.split(".")[2])
        except IndexError:
            idx = None
        if idx is not None and module_id in name and idx in layers:
            model.outputs[module_id][idx] = []
            module.register_forward_hook(
                lambda _m, _i, out, _idx=idx: model.outputs[module_id].__setitem__(_idx, fn(out.detach().squeeze(0))))


def preds(model, prompt, want_lp, want_rk):
    ids = torch.tensor(bytearray(prompt.encode("utf-8"))).long()[None, :]
    probs = torch.softmax(model(ids).squeeze(0), dim=-1)
    p = probs[:-1, :].gather(dim=1, index=ids[:, 1:].T)
    ranks = (probs[:-1, :] > p).long().sum(dim=1)
    return (p.squeeze(1) if want_lp else None), (ranks if want_rk else None)


def reducer(reduction, dim):
    return {
        None: None,
        "mean": lambda t: torch.mean(t, dim=dim) if dim is not None else torch.mean(t),
        "min": lambda t: torch.min(t, dim=dim) if dim is not None else torch.min(t),
        "max": lambda t: torch.max(t, dim=dim) if dim is not None else torch.max(t),
        "norm": lambda t: torch.norm(t, p="fro", dim=dim),
        "fro": lambda t: torch.norm(t, p="fro", dim=(1, 2)),
        "nuc": lambda t: torch.norm(t, p="nuc", dim=(1, 2)),
    }[reduction]


def original_record(model, job):
    script, prompt = job["script"], job["prompt"]
    n_layer = len(model.mambabyte.layers)
    layers = job.get("layer_idxs") or list(range(n_layer))
    lp, rk = job.get("return_log_probs", False), job.get("return_ranks", False)
    common = {"model_id": job["model_id"], "layer_idxs": layers}
    if script == "extract_module_outputs":
        mid = job["module_id"]
        attach(model, mid, layers, job.get("nonlinearity"))
        log_probs, ranks = preds(model, prompt, lp, rk)
        return {"prompt": prompt, mid: model.outputs[mid], "log_probs": log_probs, "ranks": ranks,
                **common, "module_id": mid, "pretrained_model_filepath": job["ckpt"]}
    attach(model, "dt_proj", layers, "softplus")
    if script == "extract_input_sim_with_discrete_A":
        attach(model, "in_proj", layers, None)
    log_probs, ranks = preds(model, prompt, lp, rk)
    out = {}
    for l in layers:
        A = -torch.exp(model.mambabyte.layers[l].mixer.A_log.detach())
        dA = torch.exp(torch.einsum("ld,dn->ldn", model.outputs["dt_proj"][l], A))
        if script == "extract_discrete_A":
            red = reducer(job.get("reduction"), job.get("reduction_dim"))
            out[l] = red(dA) if red else dA
        else:
            x, _ = model.outputs["in_proj"][l].chunk(2, dim=1)
            out[l] = F.cosine_similarity(dA, x.unsqueeze(2), dim=1)
    key = "discrete_A" if script == "extract_discrete_A" else "input_sim_with_discrete_A"
    rec = {"prompt": prompt, key: out, "log_probs": log_probs, "ranks": ranks, **common}
    if script == "extract_discrete_A":
        rec["reduction"] = job.get("reduction")
    rec["pretrained_model_filepath"] = job["ckpt"]
    return rec


def compare(ref, got, path, problems):
    rt = torch.return_types
    if isinstance(ref, (rt.min, rt.max)):
        if type(got) is not type(ref):
            return problems.append(f"{path}: {type(got).__name__}, want {type(ref).__name__}")
        compare(ref.values, got.values, path + ".values", problems)
        same = ref.indices == got.indices
        # An index may differ only where two candidates are equal to float32 precision.
        if not bool(same.all()):
            problems.append(f"{path}.indices differ at {int((~same).sum())} places")
        return
    if isinstance(ref, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return problems.append(f"{path}: {type(got).__name__}, want torch.Tensor")
        want_dtype = torch.int64 if ref.dtype == torch.int64 else torch.float32
        if got.dtype != want_dtype:
            problems.append(f"{path}: dtype {got.dtype}, want {want_dtype}")
        if tuple(got.shape) != tuple(ref.shape):
            return problems.append(f"{path}: shape {tuple(got.shape)}, want {tuple(ref.shape)}")
        r, g = ref.double(), got.double()
        err = ((r - g).abs() / (r.abs() + 1e-3)).max().item() if r.numel() else 0.0
        if err > 2e-3:
            problems.append(f"{path}: max relative error {err:.2e}")
        return
    if isinstance(ref, dict):
        if not isinstance(got, dict) or set(got) != set(ref):
            return problems.append(f"{path}: keys {sorted(map(str, got)) if isinstance(got, dict) else type(got)}, want {sorted(map(str, ref))}")
        for k in ref:
            compare(ref[k], got[k], f"{path}[{k!r}]", problems)
        return
    if type(got) is not type(ref) or got != ref:
        problems.append(f"{path}: {got!r}, want {ref!r}")


def main():
    ckpt, job_path = sys.argv[1], sys.argv[2]
    jobs = json.load(open(job_path))
    sd = torch.load(ckpt, map_location="cpu")
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}
    n_layer = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("mambabyte.layers."))
    d_model = sd["mambabyte.token_embedding.weight"].shape[1]
    d_state = sd["mambabyte.layers.0.mixer.A_log"].shape[1]
    d_conv = sd["mambabyte.layers.0.mixer.conv1d.weight"].shape[2]
    expand = sd["mambabyte.layers.0.mixer.in_proj.weight"].shape[0] // (2 * d_model)
    report = []
    for job in jobs:
        model = LM(d_model, n_layer, d_state=d_state, d_conv=d_conv, expand=expand).double()
        model.load_state_dict(sd)
        with torch.no_grad():
            ref = original_record(model, job)
        with open(job["pickle"], "rb") as fp:
            got = pickle.load(fp)
        problems = []
        compare(ref, got, "record", problems)
        report.append({"job": job["name"], "problems": problems})
    print(json.dumps(report))


if __name__ == "__main__":
    main()
