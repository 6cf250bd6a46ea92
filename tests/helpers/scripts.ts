/**
 * Runs the task scripts (scripts/*.ts) as a user would — `deno run -A scripts/<x>.ts ...` from the
 * repository root — and checks what they write with Debian's Python (numpy, msgpack, pickle),
 * never with the project's own readers.
 *
 * @module
 */

import { runPython } from "./python.ts";

/** The repository root (the scripts' working directory). */
export const REPO_ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
/** The config with the small test models. */
export const CONFIG = "configs/mambabyte_lm.yml";
/** Committed fixtures made by the independent PyTorch reference (may be absent). */
export const FIXTURES = Deno.env.get("MAMBABYTE_TEST_FIXTURES") ?? `${REPO_ROOT}/tests/fixtures`;
/** The prompt the fixtures were made from (tools/fixtures/make_fixtures.py). */
export const FIXTURE_PROMPT =
  "The quick brown fox \u2014 jumps over the lazy d\u00f6g. 1234567890 \u00c6\u00d8\u00c5!";

/** What a script run produced. */
export interface ScriptResult {
  /** Exit code. */
  code: number;
  /** Standard output, UTF-8 decoded. */
  stdout: string;
  /** Raw standard output. */
  stdoutBytes: Uint8Array;
  /** Standard error, UTF-8 decoded. */
  stderr: string;
}

/** Runs `deno run -A scripts/<script> ...args` in the repository root. */
export async function runScript(
  script: string,
  args: string[],
  opts: { env?: Record<string, string>; cwd?: string } = {},
): Promise<ScriptResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", `${REPO_ROOT}/scripts/${script}`, ...args],
    cwd: opts.cwd ?? REPO_ROOT,
    env: { NO_COLOR: "1", ...opts.env },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: dec.decode(out.stdout),
    stdoutBytes: out.stdout,
    stderr: dec.decode(out.stderr),
  };
}

/** Runs a script and throws with its stderr unless it exits 0. */
export async function runScriptOk(script: string, args: string[]): Promise<ScriptResult> {
  const r = await runScript(script, args);
  if (r.code !== 0) {
    throw new Error(`${script} ${args.join(" ")} exited ${r.code}:\n${r.stderr}`);
  }
  return r;
}

/** Runs jobs with at most `n` in flight. */
export async function pool<T>(n: number, jobs: (() => Promise<T>)[]): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) {
      const i = next++;
      out[i] = await jobs[i]();
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, jobs.length) }, worker));
  return out;
}

/** True when `path` exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** Names of the entries of a directory, sorted. */
export async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}

/** Why the PyTorch-made fixtures cannot be used (null when they can); warns once. */
let fixtureReason: Promise<string | null> | undefined;
export function fixturesMissing(): Promise<string | null> {
  fixtureReason ??= (async () => {
    for (const f of ["ln_model.safetensors", "expected.safetensors"]) {
      if (!(await exists(`${FIXTURES}/${f}`))) {
        const why = `tests/fixtures/${f} is missing`;
        console.warn(`scripts tests: fixture checks against the PyTorch reference skipped: ${why}`);
        return why;
      }
    }
    return null;
  })();
  return fixtureReason;
}

/**
 * Python helpers shared by every check: a numpy safetensors reader and writer, readers of the
 * three output formats, a flattening into {"name": array} + fields, `close` (max abs error over
 * max abs reference) collecting problems, the nonlinearities, and a float64 numpy reference of
 * the MambaByte model (LayerNorm with bias, mamba_ssm names) with a checkpoint maker.
 */
export const PY_LIB = String.raw`
import sys, json, pickle, struct, math
import numpy as np, msgpack

ST_DTYPES = {"F32": "<f4", "F64": "<f8", "I64": "<i8", "I32": "<i4", "U8": "|u1", "BOOL": "|b1"}

def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n).decode("utf-8"))
        buf = f.read()
    meta = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, e in header.items():
        a, b = e["data_offsets"]
        tensors[name] = np.frombuffer(buf[a:b], dtype=ST_DTYPES[e["dtype"]]).reshape(e["shape"])
    return tensors, meta

def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        st = "I32" if np.asarray(a).dtype.kind in "iu" else "F32"
        raw = np.ascontiguousarray(a, dtype="<i4" if st == "I32" else "<f4").tobytes()
        header[name] = {"dtype": st, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

def _unmsgpack(v):
    if isinstance(v, dict):
        if set(v) == {"dtype", "shape", "data"} and isinstance(v["data"], bytes):
            return np.frombuffer(v["data"], dtype=np.dtype(v["dtype"]).newbyteorder("<")).reshape(v["shape"])
        return {k: _unmsgpack(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_unmsgpack(x) for x in v]
    return v

def load_record(path):
    if path.endswith(".pkl"):
        with open(path, "rb") as f:
            return pickle.load(f)
    with open(path, "rb") as f:
        return _unmsgpack(msgpack.unpackb(f.read(), raw=False, strict_map_key=False))

problems = []

def flat(path):
    """Any output file -> ({tensor name: array}, {field: value}); names as in safetensors."""
    if path.endswith(".safetensors"):
        t, meta = read_safetensors(path)
        return t, {k: json.loads(v) for k, v in meta.items()}
    rec = load_record(path)
    tensors, fields = {}, {}
    for k, v in rec.items():
        if isinstance(v, np.ndarray):
            tensors[k] = v
        elif isinstance(v, dict) and v and all(isinstance(x, np.ndarray) for x in v.values()):
            for layer, x in v.items():
                if type(layer) is not int:
                    problems.append(f"{path}: {k} has a non-int layer key {layer!r}")
                tensors[f"{k}.{layer}"] = x
        else:
            fields[k] = v
    return tensors, fields

def tensors_of(path):
    return flat(path)[0]

def close(name, got, want, tol):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        problems.append(f"{name}: shape {got.shape} != {want.shape}")
        return
    if want.size == 0:
        return
    err = np.abs(got - want).max()
    scale = np.abs(want).max()
    rel = err / scale if scale > 0 else err
    if not rel <= tol:
        problems.append(f"{name}: relative error {rel:.3g} > {tol:g}")

def equal(name, got, want):
    if got != want:
        problems.append(f"{name}: {got!r} != {want!r}")

def finish(**info):
    print(json.dumps({"problems": problems, "info": info}))

def softplus(x):
    return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))

def silu(x):
    return x / (1 + np.exp(-x))

_erf = np.vectorize(math.erf)

def nonlin(name, x):
    x = np.asarray(x, np.float64)
    if name == "linear": return x
    if name == "relu": return np.maximum(x, 0)
    if name in ("leaky_relu", "lrelu"): return np.where(x < 0, 0.01 * x, x)
    if name == "elu": return np.where(x > 0, x, np.expm1(x))
    if name == "gelu": return 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    if name in ("swish", "silu"): return silu(x)
    if name == "tanh": return np.tanh(x)
    if name == "softplus": return softplus(x)
    if name == "softmax":
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    raise ValueError(name)

def discrete_a(dt, A):
    return np.exp(softplus(np.asarray(dt, np.float64))[:, :, None] * np.asarray(A, np.float64)[None])

def reduce(dA, kind, dim):
    if kind in ("fro", "nuc"):
        return np.array([np.linalg.norm(m, kind) for m in dA])
    if kind == "norm":
        return np.sqrt((dA * dA).sum()) if dim is None else np.linalg.norm(dA, axis=dim)
    f = {"mean": np.mean, "min": np.min, "max": np.max}[kind]
    return f(dA) if dim is None else f(dA, axis=dim)

def cosine(dA, x):
    num = (dA * x[:, :, None]).sum(1)
    den = np.linalg.norm(dA, axis=1) * np.linalg.norm(x, axis=1)[:, None]
    return num / np.maximum(den, 1e-8)

def A_of(weights, layer):
    for k, v in weights.items():
        if k.endswith(f"layers.{layer}.mixer.A_log"):
            return -np.exp(v.astype(np.float64))
    raise KeyError(f"A_log of layer {layer}")

def make_checkpoint(path, seed, d_model, n_layer, d_state=16, d_conv=4):
    rng = np.random.default_rng(seed)
    Di, R, V = 2 * d_model, math.ceil(d_model / 16), 256
    u = lambda shape, b: (rng.random(shape) * 2 - 1) * b
    w = {"backbone.embedding.weight": rng.standard_normal((V, d_model)) * 0.5}
    for i in range(n_layer):
        p = f"backbone.layers.{i}."
        m = p + "mixer."
        w[p + "norm.weight"] = 1 + 0.1 * rng.standard_normal(d_model)
        w[p + "norm.bias"] = 0.1 * rng.standard_normal(d_model)
        w[m + "in_proj.weight"] = u((2 * Di, d_model), math.sqrt(3 / d_model))
        w[m + "conv1d.weight"] = u((Di, 1, d_conv), 0.5)
        w[m + "conv1d.bias"] = u((Di,), 0.5)
        w[m + "x_proj.weight"] = u((R + 2 * d_state, Di), math.sqrt(3 / Di))
        w[m + "dt_proj.weight"] = u((Di, R), R ** -0.5)
        dt = np.exp(rng.random(Di) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
        w[m + "dt_proj.bias"] = dt + np.log(-np.expm1(-dt))
        w[m + "A_log"] = np.log(np.arange(1, d_state + 1))[None, :] + 0.3 * rng.standard_normal((Di, d_state))
        w[m + "D"] = 0.5 + rng.random(Di)
        w[m + "out_proj.weight"] = u((d_model, Di), math.sqrt(3 / Di))
    w["backbone.norm_f.weight"] = 1 + 0.1 * rng.standard_normal(d_model)
    w["backbone.norm_f.bias"] = 0.1 * rng.standard_normal(d_model)
    w["lm_head.weight"] = u((V, d_model), math.sqrt(3 / d_model))
    w = {k: v.astype(np.float32) for k, v in w.items()}
    write_safetensors(path, w)
    return w

def layernorm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b

def reference(weights, ids):
    """float64 forward of a LayerNorm MambaByte: taps in_proj.l, dt_proj.l; logprobs, ranks."""
    f = {k: v.astype(np.float64) for k, v in weights.items()}
    ids = np.asarray(ids)
    L = len(ids)
    n_layer = 1 + max(int(k.split(".")[2]) for k in f if k.startswith("backbone.layers."))
    h, residual, taps = f["backbone.embedding.weight"][ids], None, {}
    for i in range(n_layer):
        m = f"backbone.layers.{i}.mixer."
        residual = h if residual is None else h + residual
        hn = layernorm(residual, f[f"backbone.layers.{i}.norm.weight"], f[f"backbone.layers.{i}.norm.bias"])
        xz = hn @ f[m + "in_proj.weight"].T
        taps[f"in_proj.{i}"] = xz
        Di = xz.shape[1] // 2
        x, z = xz[:, :Di], xz[:, Di:]
        cw = f[m + "conv1d.weight"][:, 0, :]
        K = cw.shape[1]
        xp = np.concatenate([np.zeros((K - 1, Di)), x])
        xc = silu(sum(xp[k:k + L] * cw[:, k] for k in range(K)) + f[m + "conv1d.bias"])
        xdbl = xc @ f[m + "x_proj.weight"].T
        R = f[m + "dt_proj.weight"].shape[1]
        N = f[m + "A_log"].shape[1]
        dt = xdbl[:, :R] @ f[m + "dt_proj.weight"].T + f[m + "dt_proj.bias"]
        taps[f"dt_proj.{i}"] = dt
        B, C = xdbl[:, R:R + N], xdbl[:, R + N:]
        delta, A = softplus(dt), -np.exp(f[m + "A_log"])
        s, ys = np.zeros((Di, N)), []
        for t in range(L):
            s = np.exp(delta[t][:, None] * A) * s + (delta[t] * xc[t])[:, None] * B[t][None, :]
            ys.append(s @ C[t] + f[m + "D"] * xc[t])
        h = (np.array(ys) * silu(z)) @ f[m + "out_proj.weight"].T
    hf = layernorm(h + residual, f["backbone.norm_f.weight"], f["backbone.norm_f.bias"])
    logits = hf @ f["lm_head.weight"].T
    mx = logits.max(-1, keepdims=True)
    lsm = logits - mx - np.log(np.exp(logits - mx).sum(-1, keepdims=True))
    lp = lsm[np.arange(L - 1), ids[1:]]
    ranks = (lsm[:-1] > lp[:, None]).sum(-1)
    gap = np.abs(lsm[:-1] - lp[:, None])
    gap[np.arange(L - 1), ids[1:]] = np.inf
    taps["logprobs"], taps["ranks"], taps["rank_gap"] = lp, ranks, gap.min(-1)
    taps["log_softmax"] = lsm
    return taps
`;

/** The JSON a Python check prints: problems found (empty when all is well) and extra info. */
export interface PyReport {
  /** One line per mismatch. */
  problems: string[];
  /** Whatever the check chose to report. */
  info: Record<string, unknown>;
}

/** Runs `code` after {@link PY_LIB} with `payload` (JSON) as `ARG`, returns its report. */
export async function pyCheck(code: string, payload: unknown): Promise<PyReport> {
  const src = `${PY_LIB}\nARG = json.loads(sys.argv[1])\n${code}\n`;
  const r = await runPython(src, [JSON.stringify(payload)]);
  if (r.code !== 0) throw new Error(`python check failed (exit ${r.code}):\n${r.stderr}`);
  const last = r.stdout.trim().split("\n").at(-1) ?? "";
  return JSON.parse(last) as PyReport;
}

/** Throws listing every problem of a report. */
export function assertNoProblems(report: PyReport, what: string): void {
  if (report.problems.length > 0) {
    throw new Error(
      `${what}: ${report.problems.length} problem(s):\n  ${report.problems.join("\n  ")}`,
    );
  }
}
