// Nonlinearities, reductions of discrete-A and the input cosine similarity, checked against numpy
// (float64) computed by the system Python on the same random input.

import assert from "node:assert/strict";
import {
  applyNonlinearity,
  erf,
  NONLINEARITIES,
  type Nonlinearity,
} from "../src/analysis/nonlinearity.ts";
import {
  cosineSimOverD,
  isPerPosition,
  reduce,
  reduceChunk,
  Reducer,
  type Reduction,
  REDUCTIONS,
} from "../src/analysis/reductions.ts";
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

// ---------------------------------------------------------------- reductions

const REDUCE_PY = `
import json, sys
import numpy as np
x = np.fromfile(sys.argv[1], dtype="<f4").astype(np.float64)
L, D, N = (int(a) for a in sys.argv[2:5])
x = x.reshape(L, D, N)
out = {}
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
    name: `reductions of (${L}, ${D}, ${N}) match numpy for every kind and dim`,
    ignore,
    fn: async () => {
      const x = randn(L * D * N, L * 1000 + D * 10 + N);
      const want = await withFile(
        x,
        (p) => runPythonJson(REDUCE_PY, [p, String(L), String(D), String(N)]),
      ) as Record<string, { shape: number[]; data: number[] }>;
      for (const kind of REDUCTIONS) {
        const dims: (number | undefined)[] = kind === "fro" || kind === "nuc"
          ? [undefined, -2]
          : [undefined, 0, 1, 2, -1, -2, -3];
        for (const dim of dims) {
          const key = kind === "fro" || kind === "nuc"
            ? kind
            : `${kind}/${dim === undefined ? "all" : dim}`;
          const got = reduce(kind, x, [L, D, N], dim);
          assert.deepEqual(got.shape, want[key].shape, `${key} shape`);
          assertClose(got.data, want[key].data, `${key} dim=${dim}`, 1e-5, 1e-6);
        }
      }
    },
  });
}

Deno.test("reductions: chunked (Reducer, reduceChunk) equals one-shot, bit for bit", () => {
  const [L, D, N] = [11, 19, 16];
  const x = randn(L * D * N, 99);
  const splits = [3, 1, 4, 0, 3];
  for (const kind of REDUCTIONS) {
    for (const dim of [undefined, 0, 1, 2, -1, -2]) {
      const whole = reduce(kind, x, [L, D, N], dim);
      const r = new Reducer(kind, [D, N], dim);
      let p = 0;
      const parts: Float32Array[] = [];
      for (const n of splits) {
        const chunk = x.subarray(p * D * N, (p + n) * D * N);
        r.push(chunk, n);
        if (isPerPosition(kind, dim)) parts.push(reduceChunk(kind, chunk, [n, D, N], dim));
        p += n;
      }
      const got = r.finish();
      assert.deepEqual(got.shape, whole.shape);
      assert.deepEqual(got.data, whole.data, `${kind} dim=${dim}`);
      if (isPerPosition(kind, dim)) {
        const cat = new Float32Array(whole.data.length);
        let off = 0;
        for (const c of parts) {
          cat.set(c, off);
          off += c.length;
        }
        assert.deepEqual(cat, whole.data);
      } else {
        assert.throws(() => reduceChunk(kind, x, [L, D, N], dim), MambaByteError);
      }
    }
  }
});

Deno.test("reductions: torch-style errors and edge cases", () => {
  const x = new Float32Array(2 * 3 * 4);
  for (const dim of [3, -4, 1.5]) {
    assert.throws(() => reduce("mean", x, [2, 3, 4], dim), /dimension out of range/);
  }
  assert.throws(() => reduce("median" as Reduction, x, [2, 3, 4]), MambaByteError);
  assert.throws(() => reduce("mean", new Float32Array(5), [2, 3, 4]), RangeError);
  // min / max propagate NaN.
  const y = Float32Array.of(1, NaN, 3, 4);
  assert.ok(Number.isNaN(reduce("max", y, [1, 2, 2]).data[0]));
  assert.ok(Number.isNaN(reduce("min", y, [1, 2, 2], -1).data[0]));
  assert.equal(reduce("min", y, [1, 2, 2], -1).data[1], 3);
  // Zero positions: per-position results are empty; across positions min has no identity.
  assert.deepEqual(reduce("nuc", new Float32Array(0), [0, 3, 4]).shape, [0]);
  assert.throws(() => reduce("min", new Float32Array(0), [0, 3, 4], 0), MambaByteError);
  // A zero matrix has nuclear norm 0 (clamped eigenvalues, no NaN).
  assert.deepEqual([...reduce("nuc", new Float32Array(12), [1, 3, 4]).data], [0]);
});

// ---------------------------------------------------------------- cosine similarity

const COS_PY = `
import json, sys
import numpy as np
a = np.fromfile(sys.argv[1], dtype="<f4").astype(np.float64)
L, D, N, stride, off = (int(v) for v in sys.argv[2:7])
dA = a[:L * D * N].reshape(L, D, N)
buf = a[L * D * N:]
x = np.stack([buf[off + l * stride: off + l * stride + D] for l in range(L)])
eps = 1e-8
na = np.maximum(np.linalg.norm(dA, axis=1), eps)            # (L, N)
nx = np.maximum(np.linalg.norm(x, axis=1), eps)[:, None]    # (L, 1)
cos = np.einsum("ldn,ld->ln", dA, x) / (na * nx)
json.dump(cos.ravel().tolist(), sys.stdout)
`;

Deno.test({
  name: "cosineSimOverD matches torch's cosine_similarity(dA, x[..., None], dim=-2)",
  ignore,
  fn: async () => {
    const [L, D, N] = [6, 41, 16];
    const stride = 2 * D + 3, off = 5; // x is a view into a wider buffer (as x inside xz)
    const dA = randn(L * D * N, 3);
    const buf = randn(off + (L - 1) * stride + D, 4);
    buf.fill(0, off + 2 * stride, off + 2 * stride + D); // a zero input row: eps clamp
    dA.fill(0, 3 * D * N, 4 * D * N); // a zero discrete-A position
    const both = new Float32Array(dA.length + buf.length);
    both.set(dA);
    both.set(buf, dA.length);
    const want = await withFile(
      both,
      (p) => runPythonJson(COS_PY, [p, ...[L, D, N, stride, off].map(String)]),
    ) as number[];
    const got = cosineSimOverD(dA, buf, [L, D, N], { xStride: stride, xOffset: off });
    assertClose(got, want, "cos", 1e-5, 1e-6);
    for (let n = 0; n < N; n++) assert.equal(got[2 * N + n], 0);
    assert.throws(() => cosineSimOverD(dA, buf.subarray(0, 10), [L, D, N]), RangeError);
  },
});
