// Nonlinearities, the native reductions of discrete-A (mb_discrete_a) and the input cosine
// similarity (mb_discrete_a_input_sim), checked against numpy (float64) computed by the system
// Python on the same random input.

import assert from "node:assert/strict";
import {
  applyNonlinearity,
  erf,
  NONLINEARITIES,
  type Nonlinearity,
} from "../src/analysis/nonlinearity.ts";
import { normalizeDim, REDUCTIONS } from "../src/analysis/reductions.ts";
import { reducedShape } from "../src/analysis/discrete_a.ts";
import { Backend, type DiscreteAReduction, offsetPtr, type Ptr } from "../src/backend/backend.ts";
import { MambaByteError } from "../src/errors.ts";
import { runPythonJson, skipWithoutPython } from "./helpers/python.ts";

const ignore = await skipWithoutPython(["numpy"]);

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Standard normal samples (Box-Muller), rounded to float32. */
function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = scale * Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  }
  return out;
}

/** |got - want| <= rtol |want| + atol, element-wise, with the first failure named. */
function assertClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  what: string,
  rtol = 1e-5,
  atol = 1e-7,
): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < got.length; i++) {
    const g = got[i], w = want[i];
    if (Number.isNaN(w) && Number.isNaN(g)) continue;
    if (!(Math.abs(g - w) <= rtol * Math.abs(w) + atol)) {
      assert.fail(`${what}[${i}]: got ${g}, want ${w}`);
    }
  }
}

async function withFile<T>(data: Float32Array, fn: (path: string) => Promise<T>): Promise<T> {
  const path = await Deno.makeTempFile({ suffix: ".f32" });
  try {
    await Deno.writeFile(path, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    return await fn(path);
  } finally {
    await Deno.remove(path);
  }
}

// ---------------------------------------------------------------- nonlinearities

const NONLIN_PY = `
import json, math, sys
import numpy as np
x = np.fromfile(sys.argv[1], dtype="<f4").astype(np.float64)
rows, cols = int(sys.argv[2]), int(sys.argv[3])
sig = lambda v: 1 / (1 + np.exp(-v))
with np.errstate(over="ignore"):
    silu = x / (1 + np.exp(-x))
    sp = np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20))))
m = x.reshape(rows, cols)
e = np.exp(m - m.max(axis=1, keepdims=True))
out = {
  "linear": x, "relu": np.maximum(x, 0), "leaky_relu": np.where(x > 0, x, 0.01 * x),
  "elu": np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
  "gelu": 0.5 * x * np.vectorize(math.erfc)(-x / math.sqrt(2)),
  "silu": silu, "tanh": np.tanh(x), "softplus": sp,
  "softmax": (e / e.sum(axis=1, keepdims=True)).ravel(),
  "erf": np.vectorize(math.erf)(x / 4),
}
out["lrelu"], out["swish"] = out["leaky_relu"], out["silu"]
json.dump({k: v.tolist() for k, v in out.items()}, sys.stdout)
`;

Deno.test({
  name: "every nonlinearity matches numpy (float64) to 1e-5",
  ignore,
  fn: async () => {
    const rows = 13, cols = 37;
    const x = randn(rows * cols, 7, 4);
    // Edge values: softplus threshold, saturations, tiny and zero inputs.
    x.set([0, -0, 1e-6, -1e-6, 19.999, 20, 20.001, 30, -30, -90, 90, 8, -8, 0.5, -0.5], 0);
    const want = await withFile(
      x,
      (p) => runPythonJson(NONLIN_PY, [p, String(rows), String(cols)]),
    ) as Record<string, number[]>;
    for (const name of NONLINEARITIES) {
      const got = applyNonlinearity(name, x, rows, cols);
      assertClose(got, want[name], name, 1e-5, 1e-30);
    }
    assertClose(Array.from(x, (v) => erf(v / 4)), want.erf, "erf", 1e-6, 1e-30);
  },
});

Deno.test("nonlinearities: in place, NaN propagation, bad sizes", () => {
  const x = Float32Array.of(-1, 0, 2, NaN);
  const same = applyNonlinearity("relu", x, 1, 4, x);
  assert.equal(same, x);
  assert.deepEqual([...x.slice(0, 3)], [0, 0, 2]);
  assert.ok(Number.isNaN(x[3]));
  assert.ok(Number.isNaN(applyNonlinearity("softmax", Float32Array.of(1, NaN), 1, 2)[0]));
  // Huge logits stay finite under softmax.
  assertClose(applyNonlinearity("softmax", Float32Array.of(1000, 1000), 1, 2), [0.5, 0.5], "sm");
  assert.throws(() => applyNonlinearity("relu", new Float32Array(5), 2, 3), RangeError);
  assert.throws(() => applyNonlinearity("nope" as Nonlinearity, new Float32Array(1), 1, 1));
  assert.equal(erf(0), 0);
  assertClose([erf(1e-10)], [1.1283791670955126e-10], "erf small", 1e-12);
});

// ---------------------------------------------------------------- discrete-A reductions

const BE = Backend.create("cpu");
Deno.test.afterAll(() => BE.close());

/** Runs `f` with the arrays uploaded to the CPU backend; frees them after. */
function withBuffers<T>(arrays: ArrayBufferView[], f: (ptrs: Ptr[]) => T): T {
  const ptrs = arrays.map((a) => {
    const p = BE.alloc(Math.max(a.byteLength, 8));
    BE.upload(p, a);
    return p;
  });
  try {
    return f(ptrs);
  } finally {
    for (const p of ptrs) BE.free(p);
  }
}

/** mb_discrete_a over a whole (L, D, N) input in one call; dim as torch's (negative counts back). */
function nativeReduce(
  kind: DiscreteAReduction,
  delta: Float32Array,
  A: Float32Array,
  [L, D, N]: [number, number, number],
  dim: number | null,
): { shape: number[]; data: Float32Array } {
  const perDim = kind === "mean" || kind === "min" || kind === "max" || kind === "norm";
  const shape = reducedShape([L, D, N], kind === "none" ? null : kind, perDim ? dim : null);
  const out = new Float32Array(shape.reduce((a, b) => a * b, 1));
  withBuffers([delta, A, out, new Float64Array(D * N)], ([dp, ap, op, acc]) => {
    BE.discreteA({
      delta: dp,
      ldDelta: D,
      A: ap,
      len: L,
      d: D,
      n: N,
      reduction: kind,
      dim: perDim ? (dim === null ? -1 : normalizeDim(dim, 3)) : 0,
      pos0: 0,
      acc,
      out: op,
      outIdx: null,
    });
    BE.download(out, op);
  });
  return { shape, data: out };
}

const REDUCE_PY = `
import json, sys
import numpy as np
raw = np.fromfile(sys.argv[1], dtype="<f4").astype(np.float64)
L, D, N = (int(a) for a in sys.argv[2:5])
delta, A = raw[:L * D].reshape(L, D), raw[L * D:].reshape(D, N)
sp = np.where(delta > 20, delta, np.log1p(np.exp(np.minimum(delta, 20))))
x = np.exp(sp[:, :, None] * A[None])
out = {"none": x}
for dim in [None, 0, 1, 2, -1, -2, -3]:
    k = "all" if dim is None else str(dim)
    out["mean/" + k] = np.mean(x, axis=dim)
    out["min/" + k] = np.min(x, axis=dim)
    out["max/" + k] = np.max(x, axis=dim)
    out["norm/" + k] = np.linalg.norm(x) if dim is None else np.linalg.norm(x, axis=dim)
out["fro"] = np.array([np.linalg.norm(x[l], "fro") for l in range(L)])
out["nuc"] = np.array([np.linalg.norm(x[l], "nuc") for l in range(L)])
json.dump({k: {"shape": list(np.shape(v)), "data": np.ravel(v).tolist()} for k, v in out.items()},
          sys.stdout)
`;

const SHAPES: [number, number, number][] = [
  [5, 37, 16], // discrete-A-like, N = 16
  [3, 7, 5], // odd sizes
  [2, 3, 8], // D < N: rank-deficient Gram matrix
  [1, 1, 1],
  [4, 129, 16],
];

for (const [L, D, N] of SHAPES) {
  Deno.test({
    name: `mb_discrete_a of (${L}, ${D}, ${N}) matches numpy for every kind and dim`,
    ignore,
    fn: async () => {
      // delta in [-4, 1], A in [-8, -0.1]: |softplus(delta) * A| <= 11, so float32's E is within
      // (4 * 11 + 4) 2^-24 < 3e-6 of float64's (tests/helpers/discrete_a_ref.ts)
      const delta = Float32Array.from(randn(L * D, L * 1000 + D * 10 + N), (v) => -1.5 + v);
      delta.forEach((v, i) => (delta[i] = Math.min(1, Math.max(-4, v))));
      const A = Float32Array.from(
        randn(D * N, 7 + N),
        (v) => -0.1 - Math.min(7.9, Math.abs(v) * 3),
      );
      const both = new Float32Array(delta.length + A.length);
      both.set(delta);
      both.set(A, delta.length);
      const want = await withFile(
        both,
        (p) => runPythonJson(REDUCE_PY, [p, String(L), String(D), String(N)]),
      ) as Record<string, { shape: number[]; data: number[] }>;
      const none = nativeReduce("none", delta, A, [L, D, N], null);
      assertClose(none.data, want.none.data, "none", 1e-5, 1e-30);
      for (const kind of REDUCTIONS) {
        const dims: (number | null)[] = kind === "fro" || kind === "nuc"
          ? [null]
          : [null, 0, 1, 2, -1, -2, -3];
        for (const dim of dims) {
          const key = kind === "fro" || kind === "nuc" ? kind : `${kind}/${dim ?? "all"}`;
          const got = nativeReduce(kind, delta, A, [L, D, N], dim);
          assert.deepEqual(got.shape, want[key].shape, `${key} shape`);
          assertClose(got.data, want[key].data, `${key} dim=${dim}`, 1e-5, 1e-6);
        }
      }
    },
  });
}

Deno.test("reductions: torch-style dimension errors", () => {
  for (const dim of [3, -4, 1.5]) {
    assert.throws(() => normalizeDim(dim, 3), MambaByteError);
    assert.throws(() => reducedShape([2, 3, 4], "mean", dim), /dimension out of range/);
  }
  assert.deepEqual(reducedShape([2, 3, 4], "max", -1), [2, 3]);
  assert.deepEqual(reducedShape([2, 3, 4], "nuc", 1), [2]);
  assert.deepEqual(reducedShape([2, 3, 4], "mean", null), []);
  assert.deepEqual(reducedShape([2, 3, 4], null, null), [2, 3, 4]);
});

// ---------------------------------------------------------------- cosine similarity

const COS_PY = `
import json, sys
import numpy as np
a = np.fromfile(sys.argv[1], dtype="<f4").astype(np.float64)
L, D, N, stride, off = (int(v) for v in sys.argv[2:7])
delta, A = a[:L * D].reshape(L, D), a[L * D:L * D + D * N].reshape(D, N)
sp = np.where(delta > 20, delta, np.log1p(np.exp(np.minimum(delta, 20))))
dA = np.exp(sp[:, :, None] * A[None])
buf = a[L * D + D * N:]
x = np.stack([buf[off + l * stride: off + l * stride + D] for l in range(L)])
eps = 1e-8
na = np.maximum(np.linalg.norm(dA, axis=1), eps)            # (L, N)
nx = np.maximum(np.linalg.norm(x, axis=1), eps)[:, None]    # (L, 1)
cos = np.einsum("ldn,ld->ln", dA, x) / (na * nx)
json.dump(cos.ravel().tolist(), sys.stdout)
`;

Deno.test({
  name: "mb_discrete_a_input_sim matches torch's cosine_similarity(dA, x[..., None], dim=-2)",
  ignore,
  fn: async () => {
    const [L, D, N] = [6, 41, 16];
    const stride = 2 * D + 3, off = 5; // x is a view into a wider buffer (as x inside xz)
    const delta = Float32Array.from(randn(L * D, 3), (v) => Math.min(1, Math.max(-4, v - 1.5)));
    const A = Float32Array.from(randn(D * N, 5), (v) => -0.1 - Math.min(7.9, Math.abs(v) * 3));
    const buf = randn(off + (L - 1) * stride + D, 4);
    buf.fill(0, off + 2 * stride, off + 2 * stride + D); // a zero input row: eps clamp
    const all = new Float32Array(delta.length + A.length + buf.length);
    all.set(delta);
    all.set(A, delta.length);
    all.set(buf, delta.length + A.length);
    const want = await withFile(
      all,
      (p) => runPythonJson(COS_PY, [p, ...[L, D, N, stride, off].map(String)]),
    ) as number[];
    const got = new Float32Array(L * N);
    withBuffers([delta, A, buf, got], ([dp, ap, xp, op]) => {
      BE.discreteAInputSim({
        delta: dp,
        ldDelta: D,
        A: ap,
        x: offsetPtr(xp, off * 4),
        ldx: stride,
        len: L,
        d: D,
        n: N,
        eps: 1e-8,
        out: op,
      });
      BE.download(got, op);
    });
    assertClose(got, want, "cos", 1e-5, 1e-6);
    for (let n = 0; n < N; n++) assert.equal(got[2 * N + n], 0);
  },
});
