/**
 * CPU kernels against naive float64 references written from mambabyte.h's formulas, on random
 * inputs with odd sizes and leading dimensions. Every op runs on three CPU contexts: the default
 * (AVX-512 + OpenBLAS), MAMBABYTE_CPU_SCALAR=1 (the portable scalar kernels) and
 * MAMBABYTE_CPU_NOBLAS=1 (the library's own GEMM); the vector and scalar paths are also compared
 * directly with each other.
 *
 * Run after `deno task build`: deno test --allow-all tests/kernels_cpu_test.ts
 */
import assert from "node:assert/strict";
import {
  Backend,
  envFlags,
  FLAG_UNFUSED_STEPS,
  hasCuda,
  offsetPtr,
  type Ptr,
  uniform,
} from "../src/backend/backend.ts";
import { NativeError, Status } from "../src/native/lib.ts";
import { mulberry32, testSeed } from "./helpers/compare.ts";
import { cpuContext } from "./helpers/cpu_contexts.ts";
import { fromF16 } from "./helpers/f16.ts";

// ---- contexts ------------------------------------------------------------------------------

const VEC = Backend.create("cpu");
const SCALAR = cpuContext("scalar");
const NOBLAS = cpuContext("noblas");
const ALL: [string, Backend][] = [["vector", VEC], ["scalar", SCALAR], ["noblas", NOBLAS]];
// Released once this file's tests are done (also when a filter runs only some of them).
Deno.test.afterAll(() => {
  for (const [, be] of ALL) be.close();
});

// ---- helpers -------------------------------------------------------------------------------

const rng = mulberry32;

function randArray(r: () => number, n: number, lo = -1, hi = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * r();
  return a;
}

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);
/** float32 -> bfloat16 bits, round to nearest even. */
function toBf16(a: Float32Array): Uint16Array {
  const out = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) {
    f32buf[0] = a[i];
    const u = u32buf[0];
    out[i] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return out;
}
function fromBf16(h: Uint16Array): Float32Array {
  const out = new Float32Array(h.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < h.length; i++) u[i] = h[i] << 16;
  return out;
}

/** Tracks backend buffers of one test so they are freed at the end. */
class Mem {
  #ptrs: Ptr[] = [];
  constructor(readonly be: Backend) {}
  put(a: ArrayBufferView): Ptr {
    const p = this.be.alloc(Math.max(a.byteLength, 4));
    this.#ptrs.push(p);
    this.be.upload(p, a);
    return p;
  }
  zeros(bytes: number): Ptr {
    const p = this.be.alloc(Math.max(bytes, 4));
    this.#ptrs.push(p);
    this.be.memset(p, 0, Math.max(bytes, 4));
    return p;
  }
  f32(p: Ptr, n: number): Float32Array {
    const a = new Float32Array(n);
    this.be.download(a, p);
    return a;
  }
  i32(p: Ptr, n: number): Int32Array {
    const a = new Int32Array(n);
    this.be.download(a, p);
    return a;
  }
  u16(p: Ptr, n: number): Uint16Array {
    const a = new Uint16Array(n);
    this.be.download(a, p);
    return a;
  }
  free(): void {
    for (const p of this.#ptrs) this.be.free(p);
    this.#ptrs = [];
  }
}

function withMem<T>(be: Backend, f: (m: Mem) => T): T {
  const m = new Mem(be);
  try {
    return f(m);
  } finally {
    m.free();
  }
}

/** |a - e| <= atol + rtol * scale (scale defaults to |e|) for every element. */
function assertClose(
  what: string,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rtol = 1e-5,
  atol = 1e-6,
  scale?: ArrayLike<number>,
): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i], e = expected[i];
    const s = scale ? scale[i] : Math.abs(e);
    const ok = (a === e) || Math.abs(a - e) <= atol + rtol * s;
    if (!ok) {
      assert.fail(`${what}: element ${i}: got ${a}, expected ${e} (scale ${s})`);
    }
  }
}

function assertInvalid(f: () => void, pattern: RegExp, status: number = Status.INVALID): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof NativeError, `not a NativeError: ${e}`);
    assert.equal(e.status, status, e.message);
    assert.match(e.message, pattern);
    return true;
  });
}

const softplus = (x: number) => x > 20 ? x : Math.log1p(Math.exp(x));
const silu = (x: number) => x / (1 + Math.exp(-x));

// ---- context, errors -----------------------------------------------------------------------

Deno.test("cpu context: info, flags, CUDA without CUDA, graphs unsupported", () => {
  const info = VEC.info();
  assert.equal(info.backend, "cpu");
  assert.ok((info.threads as number) >= 1);
  assert.ok(["openblas", "none"].includes(info.blas as string));
  // OpenBLAS's kernel set (what its sgemm rate depends on), named where OpenBLAS runs the products
  assert.equal(info.blas === "openblas", /^[A-Za-z0-9]+$/.test(info.blas_core as string));
  assert.equal(NOBLAS.info().blas_core, "");
  assert.ok(["avx512", "avx2", "scalar"].includes(info.simd as string));
  assert.equal(SCALAR.info().simd, "scalar");
  assert.equal(NOBLAS.info().blas, "none");
  VEC.setFlags(1);
  VEC.setFlags(0);
  VEC.sync();
  if (!hasCuda()) {
    assertInvalid(() => Backend.create("cuda"), /built without CUDA/, Status.UNSUPPORTED);
  }
  assertInvalid(() => VEC.graphBegin(), /CUDA/, Status.UNSUPPORTED);
  const t1 = Backend.create("cpu", { threads: 1 });
  assert.equal(t1.info().threads, 1);
  t1.close();
  assert.equal(VEC.alloc(0), null);
});

Deno.test("argument validation: one clear message per bad argument", () => {
  withMem(VEC, (m) => {
    const x = m.zeros(4096), w = m.zeros(4096), y = m.zeros(4096);
    const lin = (o: Record<string, number>) =>
      VEC.linear({ x, w, wdtype: "f32", bias: null, y, n: 2, inF: 4, outF: 3, ...o });
    assertInvalid(() => lin({ ldx: 3 }), /ldx \(3\) < in_f \(4\)/);
    assertInvalid(() => lin({ ldy: 2 }), /ldy \(2\) < out_f \(3\)/);
    assertInvalid(() => lin({ n: -1 }), /n \(-1\) < 0/);
    lin({ n: 0 }); // zero-size: nothing to do
    const linB = (o: Record<string, number>) =>
      VEC.linearBf16({ x, w, wdtype: "f32", bias: null, y, n: 2, inF: 4, outF: 3, ...o });
    assertInvalid(() => linB({ inF: 0 }), /mb_linear_bf16: in_f \(0\) < 1/);
    assertInvalid(() => linB({ ldx: 3 }), /ldx \(3\) < in_f \(4\)/);
    assertInvalid(
      () =>
        VEC.addNorm({
          x,
          residual: y,
          accumulate: false,
          weight: w,
          bias: null,
          normKind: "rmsnorm",
          eps: 1e-5,
          n: 1,
          d: 4,
          out: null,
        }),
      /mb_add_norm: out and out_bf16 are both NULL/,
    );
    assertInvalid(
      () => VEC.linear({ x: null, w, wdtype: "f32", bias: null, y, n: 1, inF: 4, outF: 3 }),
      /x is NULL/,
    );
    const conv = {
      x,
      ldx: 4,
      w,
      bias: null,
      state: null,
      batch: 1,
      len: 2,
      d: 4,
      k: 4,
      out: y,
      ldo: 4,
      outPreact: null,
    };
    assertInvalid(() => VEC.conv1d({ ...conv, k: 0 }), /k \(0\) < 1/);
    assertInvalid(
      () => VEC.conv1d({ ...conv, x: null }),
      /mb_causal_conv1d: exactly one of x and x_bf16 must be given/,
    );
    assertInvalid(
      () => VEC.linearToBf16({ x: null, w, wdtype: "f32", bias: null, y, n: 2, inF: 4, outF: 3 }),
      /mb_linear_to_bf16: exactly one of x and x_bf16 must be given/,
    );
    assertInvalid(
      () => VEC.linearToBf16({ x, w, wdtype: "f32", bias: null, y, n: 2, inF: 4, outF: 3, ldy: 2 }),
      /mb_linear_to_bf16: ldy \(2\) < out_f \(3\)/,
    );
    const ids = m.put(new Int32Array([0, 9]));
    assertInvalid(
      () => VEC.embedding({ ids, n: 2, table: w, wdtype: "f32", vocab: 4, d: 2, out: y }),
      /ids\[1\] = 9/,
    );
    const cnt = m.zeros(8);
    assertInvalid(
      () =>
        VEC.sample({
          logits: x,
          batch: 1,
          v: 4,
          temperature: 0,
          topK: 0,
          topP: 1,
          seed: 1n,
          counter: cnt,
          out: y,
        }),
      /temperature/,
    );
    assertInvalid(() => VEC.readProbe(x, 100, y), /multiple of 64/);
    const commit = {
      len: 8,
      sampled: x,
      accepted: x,
      out: y,
      cap: 16,
      progress: w,
      ids: y,
      counters: w,
      dst: y,
      src: x,
      srcStride: 64,
      bytes: 64,
    };
    assertInvalid(() => VEC.specCommit({ ...commit, len: 0 }), /len 0 is outside 1\.\.65/);
    assertInvalid(() => VEC.specCommit({ ...commit, srcStride: 60 }), /src_stride \(60\) < bytes/);
    assertInvalid(() => VEC.specCommit({ ...commit, src: null }), /src is NULL/);
    assertInvalid(() => VEC.specCommit({ ...commit, progress: null }), /progress is NULL/);
    // the draws: mb_sample and mb_sample_rows share their settings' checks
    const one: Parameters<Backend["sample"]>[0] = {
      logits: x,
      batch: 2,
      v: 4,
      temperature: 1,
      topK: 0,
      topP: 1,
      seed: 1n,
      counter: w,
      out: y,
    };
    assertInvalid(() => VEC.sample({ ...one, batch: -1 }), /mb_sample: batch \(-1\) < 0/);
    assertInvalid(() => VEC.sample({ ...one, topP: NaN }), /mb_sample: top_p is NaN/);
    assertInvalid(() => VEC.sample({ ...one, v: 0 }), /mb_sample: v \(0\) < 1/);
    const rows: Parameters<Backend["sampleRows"]>[0] = { ...one, n: 2, counters: w };
    assertInvalid(() => VEC.sampleRows({ ...rows, n: -1 }), /mb_sample_rows: n \(-1\) < 0/);
    assertInvalid(
      () => VEC.sampleRows({ ...rows, temperature: 0 }),
      /mb_sample_rows: temperature \(0\) must be > 0 and finite/,
    );
    assertInvalid(() => VEC.sampleRows({ ...rows, v: 0 }), /mb_sample_rows: v \(0\) < 1/);
    assertInvalid(() => VEC.sampleRows({ ...rows, counters: null }), /counters is NULL/);
    VEC.sampleRows({ ...rows, n: 0, counters: null }); // zero rows: nothing to do
  });
});

// ---- embedding -----------------------------------------------------------------------------

function checkEmbedding(be: Backend, seed: number): void {
  const r = rng(seed);
  for (const wdtype of ["f32", "bf16"] as const) {
    for (const [n, vocab, d] of [[1, 3, 1], [5, 7, 37], [9, 256, 64]]) {
      withMem(be, (m) => {
        const table = randArray(r, vocab * d);
        const ids = Int32Array.from({ length: n }, () => Math.floor(r() * vocab));
        const tbl = wdtype === "f32" ? table : toBf16(table);
        const ref = wdtype === "f32" ? table : fromBf16(tbl as Uint16Array);
        const out = m.zeros(n * d * 4);
        be.embedding({ ids: m.put(ids), n, table: m.put(tbl), wdtype, vocab, d, out });
        const exp = new Float32Array(n * d);
        for (let i = 0; i < n; i++) exp.set(ref.subarray(ids[i] * d, ids[i] * d + d), i * d);
        assert.deepEqual(m.f32(out, n * d), exp);
      });
    }
  }
}

// ---- add + norm ----------------------------------------------------------------------------

function checkAddNorm(be: Backend, seed: number): void {
  const r = rng(seed);
  for (const normKind of ["layernorm", "rmsnorm"] as const) {
    for (const [n, d] of [[1, 1], [3, 37], [2, 1024], [4, 2048]]) {
      for (const accumulate of [false, true]) {
        for (const withBias of [false, true]) {
          for (const alias of [false, true]) {
            withMem(be, (m) => {
              const x = randArray(r, n * d, -2, 2);
              const res = randArray(r, n * d, -3, 3);
              const w = randArray(r, d, 0.5, 1.5);
              const b = randArray(r, d);
              const eps = 1e-5;
              const xp = m.put(x), rp = m.put(res);
              const out = alias ? xp : m.zeros(n * d * 4);
              be.addNorm({
                x: xp,
                residual: rp,
                accumulate,
                weight: m.put(w),
                bias: withBias ? m.put(b) : null,
                normKind,
                eps,
                n,
                d,
                out,
              });
              const expRes = new Float64Array(n * d), expOut = new Float64Array(n * d);
              for (let i = 0; i < n; i++) {
                let mean = 0;
                for (let k = 0; k < d; k++) {
                  const v = Math.fround((accumulate ? res[i * d + k] : 0) + x[i * d + k]);
                  expRes[i * d + k] = v;
                  mean += v;
                }
                mean = normKind === "layernorm" ? mean / d : 0;
                let sq = 0;
                for (let k = 0; k < d; k++) sq += (expRes[i * d + k] - mean) ** 2;
                const rstd = 1 / Math.sqrt(sq / d + eps);
                for (let k = 0; k < d; k++) {
                  expOut[i * d + k] = (expRes[i * d + k] - mean) * rstd * w[k] +
                    (withBias ? b[k] : 0);
                }
              }
              const tag = `add_norm ${normKind} n=${n} d=${d} acc=${accumulate}`;
              assertClose(`${tag} residual`, m.f32(rp, n * d), expRes, 0, 0);
              // normalised values are O(1): absolute tolerance scaled by the weight
              assertClose(`${tag} out`, m.f32(out, n * d), expOut, 2e-5, 2e-5);
            });
          }
        }
      }
    }
  }
}

// ---- linear --------------------------------------------------------------------------------

function checkLinear(be: Backend, seed: number): void {
  const r = rng(seed);
  const shapes = [
    [1, 1, 1],
    [1, 37, 13],
    [2, 64, 67],
    [3, 100, 17],
    [5, 33, 9],
    [8, 129, 40],
    [9, 37, 13],
    [33, 70, 67],
    [70, 48, 130],
    [1, 2048, 96],
  ];
  for (const wdtype of ["f32", "bf16"] as const) {
    for (const [n, inF, outF] of shapes) {
      for (const padded of [false, true]) {
        withMem(be, (m) => {
          const ldx = inF + (padded ? 3 : 0), ldy = outF + (padded ? 5 : 0);
          const x = randArray(r, n * ldx);
          const w32 = randArray(r, outF * inF);
          const wb = toBf16(w32);
          const wref = wdtype === "f32" ? w32 : fromBf16(wb);
          const bias = padded ? randArray(r, outF) : null;
          const yInit = randArray(r, n * ldy);
          const y = m.put(yInit);
          be.linear({
            x: m.put(x),
            ldx,
            w: m.put(wdtype === "f32" ? w32 : wb),
            wdtype,
            bias: bias ? m.put(bias) : null,
            n,
            inF,
            outF,
            y,
            ldy,
          });
          const got = m.f32(y, n * ldy);
          const exp = Float64Array.from(yInit), scale = new Float64Array(n * ldy);
          for (let i = 0; i < n; i++) {
            for (let o = 0; o < outF; o++) {
              let s = bias ? bias[o] : 0, a = bias ? Math.abs(bias[o]) : 0;
              for (let k = 0; k < inF; k++) {
                const p = x[i * ldx + k] * wref[o * inF + k];
                s += p;
                a += Math.abs(p);
              }
              exp[i * ldy + o] = s;
              scale[i * ldy + o] = a;
            }
          }
          // padding columns of y stay untouched (exact), products within 1e-5 of sum |x w|
          assertClose(
            `linear ${wdtype} n=${n} in=${inF} out=${outF} ldx=${ldx}`,
            got,
            exp,
            1e-5,
            1e-6,
            scale,
          );
        });
      }
    }
  }
}

// ---- causal conv1d -------------------------------------------------------------------------

interface ConvCase {
  batch: number;
  len: number;
  d: number;
  k: number;
  ldx: number;
  ldo: number;
  x: Float32Array;
  w: Float32Array;
  bias: Float32Array | null;
  state: Float32Array | null;
}

function convRef(c: ConvCase): { out: Float64Array; pre: Float64Array; state: Float64Array } {
  const { batch, len, d, k, ldx, ldo, x, w, bias, state } = c;
  const out = new Float64Array(batch * len * ldo), pre = new Float64Array(batch * len * d);
  const st = new Float64Array(batch * d * (k - 1));
  for (let b = 0; b < batch; b++) {
    for (let ch = 0; ch < d; ch++) {
      // the extended input: k-1 state values (oldest first), then the len inputs
      const ext: number[] = [];
      for (let j = 0; j < k - 1; j++) ext.push(state ? state[(b * d + ch) * (k - 1) + j] : 0);
      for (let t = 0; t < len; t++) ext.push(x[(b * len + t) * ldx + ch]);
      for (let t = 0; t < len; t++) {
        let s = bias ? bias[ch] : 0;
        for (let j = 0; j < k; j++) s += w[ch * k + j] * ext[t + j];
        pre[(b * len + t) * d + ch] = s;
        out[(b * len + t) * ldo + ch] = silu(s);
      }
      for (let j = 0; j < k - 1; j++) st[(b * d + ch) * (k - 1) + j] = ext[len + j];
    }
  }
  return { out, pre, state: st };
}

function runConv(be: Backend, c: ConvCase, withPre: boolean) {
  return withMem(be, (m) => {
    const stBytes = c.batch * c.d * (c.k - 1) * 4;
    const sp = c.state ? m.put(c.state) : null;
    const out = m.zeros(c.batch * c.len * c.ldo * 4);
    const pre = withPre ? m.zeros(c.batch * c.len * c.d * 4) : null;
    be.conv1d({
      x: m.put(c.x),
      ldx: c.ldx,
      w: m.put(c.w),
      bias: c.bias ? m.put(c.bias) : null,
      state: sp,
      batch: c.batch,
      len: c.len,
      d: c.d,
      k: c.k,
      out,
      ldo: c.ldo,
      outPreact: pre,
    });
    return {
      out: m.f32(out, c.batch * c.len * c.ldo),
      pre: pre ? m.f32(pre, c.batch * c.len * c.d) : null,
      state: sp && stBytes > 0 ? m.f32(sp, c.batch * c.d * (c.k - 1)) : null,
    };
  });
}

function convCase(
  r: () => number,
  batch: number,
  len: number,
  d: number,
  k: number,
  pad: number,
  withState: boolean,
): ConvCase {
  const ldx = d + pad, ldo = d + 2 * pad;
  return {
    batch,
    len,
    d,
    k,
    ldx,
    ldo,
    x: randArray(r, batch * len * ldx, -2, 2),
    w: randArray(r, d * k),
    bias: r() < 0.5 ? randArray(r, d) : null,
    state: withState ? randArray(r, batch * d * (k - 1), -2, 2) : null,
  };
}

function checkConv(be: Backend, seed: number): void {
  const r = rng(seed);
  for (const batch of [1, 3]) {
    for (const len of [1, 5, 129]) {
      for (const [d, k] of [[37, 4], [16, 1], [40, 2], [5, 5], [33, 3]]) {
        for (const withState of [false, true]) {
          const c = convCase(r, batch, len, d, k, len % 2 ? 3 : 0, withState);
          const got = runConv(be, c, true);
          const exp = convRef(c);
          const tag = `conv1d b=${batch} len=${len} d=${d} k=${k} state=${withState}`;
          assertClose(`${tag} pre`, got.pre!, exp.pre, 1e-5, 1e-6);
          // out's padding columns are never written (zeros)
          assertClose(`${tag} out`, got.out, exp.out, 1e-5, 1e-6);
          if (withState && k > 1) assertClose(`${tag} state`, got.state!, exp.state, 0, 0);
        }
      }
    }
  }
  // continuity: a call over a positions then one over b == one call over a + b (len-1 calls with
  // k = 4 take the decoding step's kernel: whole and partial 8-channel blocks, and at 20 x 821
  // pairs a thread's share that starts inside a block)
  const continuity = [
    [1, 1, 4, 2, 21],
    [2, 7, 4, 2, 21],
    [5, 1, 3, 2, 21],
    [3, 40, 4, 2, 21],
    [4, 1, 4, 9, 45],
    [1, 1, 4, 20, 821],
  ];
  for (const [a, b, k, batch, d] of continuity) {
    const whole = convCase(r, batch, a + b, d, k, 0, true);
    const one = runConv(be, whole, false);
    const sliceX = (t0: number, n: number) => {
      const out = new Float32Array(batch * n * d);
      for (let bb = 0; bb < batch; bb++) {
        out.set(
          whole.x.subarray((bb * (a + b) + t0) * d, (bb * (a + b) + t0 + n) * d),
          bb * n * d,
        );
      }
      return out;
    };
    const first = runConv(be, { ...whole, len: a, x: sliceX(0, a) }, false);
    const second = runConv(be, { ...whole, len: b, x: sliceX(a, b), state: first.state }, false);
    assertClose(`conv continuity ${a}+${b} state`, second.state!, one.state!, 0, 0);
    for (let bb = 0; bb < batch; bb++) {
      assertClose(
        `conv continuity ${a}+${b} out`,
        [
          ...first.out.subarray(bb * a * d, (bb + 1) * a * d),
          ...second.out.subarray(bb * b * d, (bb + 1) * b * d),
        ],
        one.out.subarray(bb * (a + b) * d, (bb + 1) * (a + b) * d),
        0,
        0,
      );
    }
  }
}

// ---- selective scan ------------------------------------------------------------------------

interface ScanCase {
  batch: number;
  len: number;
  d: number;
  n: number;
  ld: number; // ld of u, delta, z, y (>= d)
  ldbc: number; // ld of B and C (>= n)
  u: Float32Array;
  delta: Float32Array;
  A: Float32Array;
  B: Float32Array;
  C: Float32Array;
  D: Float32Array | null;
  z: Float32Array | null;
  state: Float32Array | null;
  softplus: boolean;
}

function scanCase(
  r: () => number,
  batch: number,
  len: number,
  d: number,
  n: number,
  opts: { pad?: number; D?: boolean; z?: boolean; state?: boolean; softplus?: boolean } = {},
): ScanCase {
  const pad = opts.pad ?? 0, ld = d + pad, ldbc = n + pad, rows = batch * len;
  const A = new Float32Array(d * n);
  for (let i = 0; i < d * n; i++) A[i] = -Math.exp(Math.log(1 + (i % n)) + 0.3 * (r() - 0.5));
  const softplus = opts.softplus ?? true;
  return {
    batch,
    len,
    d,
    n,
    ld,
    ldbc,
    u: randArray(r, rows * ld, -2, 2),
    // before softplus: around log(expm1(dt)) for dt in [0.001, 0.1], plus some large values
    delta: softplus ? randArray(r, rows * ld, -7, 3) : randArray(r, rows * ld, 0.001, 0.3),
    A,
    B: randArray(r, rows * ldbc),
    C: randArray(r, rows * ldbc),
    D: opts.D ?? true ? randArray(r, d) : null,
    z: opts.z ?? true ? randArray(r, rows * ld, -3, 3) : null,
    state: opts.state ?? true ? randArray(r, batch * d * n) : null,
    softplus,
  };
}

function scanRef(c: ScanCase) {
  const { batch, len, d, n, ld, ldbc } = c;
  const y = new Float64Array(batch * len * ld);
  const state = new Float64Array(batch * d * n);
  const all = new Float64Array(batch * len * d * n);
  for (let b = 0; b < batch; b++) {
    for (let ch = 0; ch < d; ch++) {
      const h = new Float64Array(n);
      if (c.state) { for (let s = 0; s < n; s++) h[s] = c.state[(b * d + ch) * n + s]; }
      for (let t = 0; t < len; t++) {
        const row = b * len + t;
        const u = c.u[row * ld + ch];
        let dt = c.delta[row * ld + ch];
        if (c.softplus) dt = softplus(dt);
        let acc = 0;
        for (let s = 0; s < n; s++) {
          h[s] = Math.exp(dt * c.A[ch * n + s]) * h[s] + dt * c.B[row * ldbc + s] * u;
          acc += c.C[row * ldbc + s] * h[s];
          all[(row * d + ch) * n + s] = h[s];
        }
        let yy = acc + (c.D ? c.D[ch] * u : 0);
        if (c.z) yy *= silu(c.z[row * ld + ch]);
        y[row * ld + ch] = yy;
      }
      for (let s = 0; s < n; s++) state[(b * d + ch) * n + s] = h[s];
    }
  }
  return { y, state, all };
}

function runScan(be: Backend, c: ScanCase, withAll: boolean, deltaBias?: Float32Array) {
  return withMem(be, (m) => {
    const rows = c.batch * c.len;
    const sp = c.state ? m.put(c.state) : null;
    const ap = withAll ? m.zeros(rows * c.d * c.n * 4) : null;
    const y = m.zeros(rows * c.ld * 4);
    const common = {
      u: m.put(c.u),
      ldu: c.ld,
      delta: m.put(c.delta),
      ldDelta: c.ld,
      deltaBias: deltaBias ? m.put(deltaBias) : null,
      A: m.put(c.A),
      B: m.put(c.B),
      ldb: c.ldbc,
      C: m.put(c.C),
      ldc: c.ldbc,
      D: c.D ? m.put(c.D) : null,
      z: c.z ? m.put(c.z) : null,
      ldz: c.ld,
      state: sp,
      d: c.d,
      n: c.n,
      deltaSoftplus: c.softplus,
      y,
      ldy: c.ld,
    };
    be.selectiveScan({ ...common, statesAll: ap, batch: c.batch, len: c.len });
    return {
      y: m.f32(y, rows * c.ld),
      state: sp ? m.f32(sp, c.batch * c.d * c.n) : null,
      all: ap ? m.f32(ap, rows * c.d * c.n) : null,
    };
  });
}

/**
 * delta_bias (mamba_ssm's; the forward leaves dt_proj's bias to the scan) gives the bits of the
 * same bias added to delta beforehand, a float32 addition either way: every CPU path, the
 * decoding form (len 1, a state) and the sequence forms, with and without softplus.
 */
Deno.test("selective_scan: delta_bias equals the bias added to delta first, bit for bit", () => {
  const r = rng(testSeed() + 7);
  for (const [name, be] of ALL) {
    for (
      const [batch, len, d, n, softplus] of [
        [1, 1, 48, 16, true],
        [2, 1, 37, 16, true],
        [1, 130, 37, 16, true],
        [3, 9, 20, 5, false],
      ] as const
    ) {
      const c = scanCase(r, batch, len, d, n, { state: true, softplus, pad: 1 });
      const bias = randArray(r, d, -3, 1);
      const added = { ...c, delta: Float32Array.from(c.delta) };
      for (let row = 0; row < batch * len; row++) {
        for (let ch = 0; ch < d; ch++) added.delta[row * c.ld + ch] += bias[ch]; // float32 add
      }
      const want = runScan(be, added, false);
      const got = runScan(be, c, false, bias);
      const tag = `${name} b=${batch} len=${len} d=${d} n=${n} softplus=${softplus}`;
      assert.deepEqual(got.y, want.y, `${tag}: y`);
      assert.deepEqual(got.state, want.state, `${tag}: state`);
    }
  }
});

/**
 * The bf16 activations (mambabyte.h): each producer's `_bf16` output is its fp32 output rounded
 * to nearest even (rounded here by toBf16, not by the library), also when the fp32 output is not
 * asked for; mb_linear_bf16 gives the bits of mb_linear over the widened rows. Every CPU context.
 */
Deno.test("bf16 outputs are the fp32 outputs rounded; linear_bf16 is linear of the widened rows", () => {
  const r = rng(testSeed() + 11);
  for (const [name, be] of ALL) {
    withMem(be, (m) => {
      // add_norm (layer and rms), with and without the fp32 output
      const n = 5, d = 37;
      const x = randArray(r, n * d, -2, 2),
        res = randArray(r, n * d),
        w = randArray(r, d, 0.5, 1.5);
      for (const normKind of ["layernorm", "rmsnorm"] as const) {
        const run = (withF32: boolean) => {
          const out = m.zeros(n * d * 4), ob = m.zeros(n * d * 2);
          be.addNorm({
            x: m.put(x),
            residual: m.put(res),
            accumulate: true,
            weight: m.put(w),
            bias: null,
            normKind,
            eps: 1e-5,
            n,
            d,
            out: withF32 ? out : null,
            outBf16: ob,
          });
          return { f32: m.f32(out, n * d), bf: m.u16(ob, n * d) };
        };
        const both = run(true), only = run(false);
        assert.deepEqual(
          both.bf,
          toBf16(both.f32),
          `${name} add_norm ${normKind}: bf16 = f32 rounded`,
        );
        assert.deepEqual(only.bf, both.bf, `${name} add_norm ${normKind}: bf16 alone`);
      }
      // causal conv1d (out with a leading dimension, the bf16 copy dense)
      {
        const batch = 2,
          len = 9,
          dc = 37,
          k = 4,
          ldx = 2 * dc + 1,
          ldo = dc + 3,
          rows = batch * len;
        const out = m.zeros(rows * ldo * 4), ob = m.zeros(rows * dc * 2);
        be.conv1d({
          x: m.put(randArray(r, rows * ldx, -2, 2)),
          ldx,
          w: m.put(randArray(r, dc * k)),
          bias: m.put(randArray(r, dc)),
          state: m.put(randArray(r, batch * dc * (k - 1))),
          batch,
          len,
          d: dc,
          k,
          out,
          ldo,
          outPreact: null,
          outBf16: ob,
        });
        const o = m.f32(out, rows * ldo), dense = new Float32Array(rows * dc);
        for (let i = 0; i < rows; i++) dense.set(o.subarray(i * ldo, i * ldo + dc), i * dc);
        assert.deepEqual(
          m.u16(ob, rows * dc),
          toBf16(dense),
          `${name} conv1d: bf16 = f32 rounded`,
        );
      }
      // selective scan (y at ld; the bf16 copy at the same ld), with and without y
      {
        const c = scanCase(r, 2, 33, 20, 16, { pad: 3 });
        const rows = c.batch * c.len;
        const run = (withF32: boolean) =>
          withMem(be, (mm) => {
            const y = mm.zeros(rows * c.ld * 4), yb = mm.zeros(rows * c.ld * 2);
            be.selectiveScan({
              u: mm.put(c.u),
              ldu: c.ld,
              delta: mm.put(c.delta),
              ldDelta: c.ld,
              A: mm.put(c.A),
              B: mm.put(c.B),
              ldb: c.ldbc,
              C: mm.put(c.C),
              ldc: c.ldbc,
              D: mm.put(c.D!),
              z: mm.put(c.z!),
              ldz: c.ld,
              state: mm.put(c.state!),
              statesAll: null,
              batch: c.batch,
              len: c.len,
              d: c.d,
              n: c.n,
              deltaSoftplus: true,
              y: withF32 ? y : null,
              ldy: c.ld,
              yBf16: yb,
            });
            return { f32: mm.f32(y, rows * c.ld), bf: mm.u16(yb, rows * c.ld) };
          });
        const both = run(true), only = run(false);
        for (let i = 0; i < rows; i++) {
          const row = (a: ArrayLike<number> & { subarray(s: number, e: number): unknown }) =>
            a.subarray(i * c.ld, i * c.ld + c.d);
          assert.deepEqual(
            row(both.bf),
            toBf16(row(both.f32) as Float32Array),
            `${name} scan row ${i}`,
          );
          assert.deepEqual(row(only.bf), row(both.bf), `${name} scan row ${i}: bf16 alone`);
        }
      }
      // linear_bf16 against linear of the widened rows (the skinny path and the GEMM)
      for (
        const [rows, inF, outF, wdtype] of [[3, 37, 20, "f32"], [20, 64, 33, "bf16"], [
          9,
          40,
          7,
          "f32",
        ]] as const
      ) {
        const ldx = inF + 2;
        const xb = toBf16(randArray(r, rows * ldx)), xw = fromBf16(xb);
        const wf = randArray(r, outF * inF);
        const wp = m.put(wdtype === "bf16" ? toBf16(wf) : wf), bias = m.put(randArray(r, outF));
        const y1 = m.zeros(rows * outF * 4), y2 = m.zeros(rows * outF * 4);
        const common = { ldx, w: wp, wdtype, bias, n: rows, inF, outF } as const;
        be.linearBf16({ ...common, x: m.put(xb), y: y1 });
        be.linear({ ...common, x: m.put(xw), y: y2 });
        assert.deepEqual(
          m.f32(y1, rows * outF),
          m.f32(y2, rows * outF),
          `${name} linear_bf16 ${rows}x${inF} ${wdtype}`,
        );
      }
    });
  }
});

/**
 * The forward's bf16 xz and delta (mambabyte.h: x_bf16, delta_bf16, z_bf16 and
 * mb_linear_to_bf16): the conv and the scan on bfloat16 bits give the bits of the same call on
 * the floats they stand for (widened here by fromBf16), and linear_to_bf16 is linear rounded to
 * nearest even (rounded here by toBf16), from fp32 or bf16 rows. Every CPU context.
 */
Deno.test("bf16 inputs of conv and scan read as their floats; linear_to_bf16 is linear rounded", () => {
  const r = rng(testSeed() + 13);
  for (const [name, be] of ALL) {
    withMem(be, (m) => {
      // conv1d: x as bf16 bits (an xz row's first half), the window carried in the state
      {
        const batch = 2, len = 11, dc = 21, k = 4, ldx = 2 * dc, rows = batch * len;
        const xb = toBf16(randArray(r, rows * ldx, -2, 2)), xw = fromBf16(xb);
        const w = m.put(randArray(r, dc * k)), bias = m.put(randArray(r, dc));
        const st0 = randArray(r, batch * dc * (k - 1));
        const run = (bf: boolean) => {
          const out = m.zeros(rows * dc * 4), state = m.put(st0);
          be.conv1d({
            x: bf ? m.put(xb) : m.put(xw),
            xBf16: bf,
            ldx,
            w,
            bias,
            state,
            batch,
            len,
            d: dc,
            k,
            out,
            ldo: dc,
            outPreact: null,
          });
          return [m.f32(out, rows * dc), m.f32(state, batch * dc * (k - 1))];
        };
        assert.deepEqual(run(true), run(false), `${name} conv1d of bf16 x`);
        // the bf16 output alone (out null): the fp32 output rounded
        const out = m.zeros(rows * dc * 4),
          ob = m.zeros(rows * dc * 2),
          ob2 = m.zeros(rows * dc * 2);
        const conv = { ldx, w, bias, batch, len, d: dc, k, ldo: dc, outPreact: null } as const;
        be.conv1d({ ...conv, x: m.put(xb), xBf16: true, state: m.put(st0), out, outBf16: ob });
        be.conv1d({
          ...conv,
          x: m.put(xb),
          xBf16: true,
          state: m.put(st0),
          out: null,
          outBf16: ob2,
        });
        assert.deepEqual(
          m.u16(ob2, rows * dc),
          toBf16(m.f32(out, rows * dc)),
          `${name} bf16 alone`,
        );
        assert.deepEqual(m.u16(ob2, rows * dc), m.u16(ob, rows * dc), `${name} bf16 alone = both`);
        // the scaled fp16 copy (outF16Exp: x_proj's operand on the twins): the fp32 output times
        // 2^e rounded to fp16, bit for bit, the fp32 output unchanged
        for (const e of [-3, 0, 5]) {
          const o16 = m.zeros(rows * dc * 4), h = m.zeros(rows * dc * 2);
          be.conv1d({
            ...conv,
            x: m.put(xb),
            xBf16: true,
            state: m.put(st0),
            out: o16,
            outBf16: h,
            outF16Exp: m.put(new Int32Array([e])),
          });
          const ref = m.f32(out, rows * dc), got = m.u16(h, rows * dc);
          assert.deepEqual(m.f32(o16, rows * dc), ref, `${name} fp16 copy: out e=${e}`);
          // the copy alone (out null): the same bits
          const h2 = m.zeros(rows * dc * 2);
          be.conv1d({
            ...conv,
            x: m.put(xb),
            xBf16: true,
            state: m.put(st0),
            out: null,
            outBf16: h2,
            outF16Exp: m.put(new Int32Array([e])),
          });
          assert.deepEqual(m.u16(h2, rows * dc), got, `${name} fp16 copy alone e=${e}`);
          for (let i = 0; i < rows * dc; i++) {
            assert.ok(
              Object.is(fromF16(got[i]), roundF16(ref[i] * 2 ** e)),
              `${name} fp16 copy e=${e}: element ${i}`,
            );
          }
        }
      }
      // selective scan: u, delta and z as bf16 bits, each alone and all
      {
        const c = scanCase(r, 2, 19, 20, 16, { pad: 2 });
        const rows = c.batch * c.len;
        // an operand's rows: fp32, bf16 bits, or scaled fp16 bits with their exponent
        type Rows = { rows: Float32Array | Uint16Array; ld: number; bf16?: true; exp?: number };
        const scanOf = (u: Rows, delta: Rows, z: Rows) =>
          withMem(be, (mm) => {
            const y = mm.zeros(rows * c.ld * 4), state = mm.put(c.state!);
            const expOf = (o: Rows) =>
              o.exp === undefined ? undefined : mm.put(new Int32Array([o.exp]));
            const bits = (o: Rows) => o.bf16 === true || o.exp !== undefined;
            be.selectiveScan({
              u: mm.put(u.rows),
              uBf16: bits(u),
              uF16Exp: expOf(u),
              ldu: u.ld,
              delta: mm.put(delta.rows),
              deltaBf16: bits(delta),
              deltaF16Exp: expOf(delta),
              ldDelta: delta.ld,
              A: mm.put(c.A),
              B: mm.put(c.B),
              ldb: c.ldbc,
              C: mm.put(c.C),
              ldc: c.ldbc,
              D: mm.put(c.D!),
              z: mm.put(z.rows),
              zBf16: bits(z),
              ldz: z.ld,
              state,
              statesAll: null,
              batch: c.batch,
              len: c.len,
              d: c.d,
              n: c.n,
              deltaSoftplus: true,
              y,
              ldy: c.ld,
            });
            return [mm.f32(y, rows * c.ld), mm.f32(state, c.batch * c.d * c.n)];
          });
        // each operand as bf16 bits, or as the floats they stand for
        const asBf16 = (v: Float32Array, bf: boolean): Rows =>
          bf ? { rows: toBf16(v), ld: c.ld, bf16: true } : { rows: fromBf16(toBf16(v)), ld: c.ld };
        const run = (dBf: boolean, zBf: boolean, uBf = false) =>
          scanOf(asBf16(c.u, uBf), asBf16(c.delta, dBf), asBf16(c.z!, zBf));
        const ref = run(false, false);
        for (
          const [dBf, zBf, uBf] of [[true, true, true], [true, false], [false, true], [
            false,
            false,
            true,
          ]]
        ) {
          assert.deepEqual(
            run(dBf, zBf, uBf),
            ref,
            `${name} scan u bf16 ${uBf} delta bf16 ${dBf} z bf16 ${zBf}`,
          );
        }
        // u as scaled fp16 rows (uF16Exp: the conv's copy on the twins): the scan of the floats
        // 2^-e h they stand for, bit for bit
        const { h, e } = toF16(be, m, m.put(c.u), c.ld, rows, c.d);
        const widened = Float32Array.from(h, (v) => fromF16(v) * 2 ** -e);
        const delta32 = { rows: c.delta, ld: c.ld }, z32 = { rows: c.z!, ld: c.ld };
        assert.deepEqual(
          scanOf({ rows: h, exp: e, ld: c.d }, delta32, z32),
          scanOf({ rows: widened, ld: c.d }, delta32, z32),
          `${name} scan of u as scaled fp16 rows`,
        );
        assert.ok(e !== 0, "the fp16 rows were scaled");
        // delta too (deltaF16Exp: dt_proj's fp16 rows on the twins)
        const dq = toF16(be, m, m.put(c.delta), c.ld, rows, c.d);
        const dWidened = Float32Array.from(dq.h, (v) => fromF16(v) * 2 ** -dq.e);
        const u16 = { rows: h, exp: e, ld: c.d };
        assert.deepEqual(
          scanOf(u16, { rows: dq.h, exp: dq.e, ld: c.d }, z32),
          scanOf(u16, { rows: dWidened, ld: c.d }, z32),
          `${name} scan of delta as scaled fp16 rows`,
        );
      }
      // linear_to_bf16 against linear rounded (the skinny path and the GEMM; with a bias)
      for (
        const [rows, inF, outF, wdtype] of [[3, 37, 20, "f32"], [20, 64, 33, "bf16"], [
          12,
          40,
          7,
          "f32",
        ]] as const
      ) {
        const ldx = inF + 2, ldy = outF + 3;
        const xf = randArray(r, rows * ldx), xb = toBf16(xf);
        const wf = randArray(r, outF * inF);
        const wp = m.put(wdtype === "bf16" ? toBf16(wf) : wf), bias = m.put(randArray(r, outF));
        const common = { ldx, w: wp, wdtype, bias, n: rows, inF, outF } as const;
        for (const bf of [false, true]) {
          const yb = m.zeros(rows * ldy * 2), yf = m.zeros(rows * outF * 4);
          be.linearToBf16({ ...common, x: bf ? m.put(xb) : m.put(xf), xBf16: bf, y: yb, ldy });
          if (bf) be.linearBf16({ ...common, x: m.put(xb), y: yf });
          else be.linear({ ...common, x: m.put(xf), y: yf });
          const got = m.u16(yb, rows * ldy), want = toBf16(m.f32(yf, rows * outF));
          for (let i = 0; i < rows; i++) {
            assert.deepEqual(
              got.subarray(i * ldy, i * ldy + outF),
              want.subarray(i * outF, (i + 1) * outF),
              `${name} linear_to_bf16 ${rows}x${inF} ${wdtype} x bf16 ${bf} row ${i}`,
            );
          }
        }
      }
    });
  }
});

Deno.test("linear_add_norm is linear (or linear_bf16) then add_norm, bit for bit", () => {
  const r = rng(testSeed() + 12);
  for (const [name, be] of ALL) {
    withMem(be, (m) => {
      // 12 rows: more than 8 (a decoding batch); 5 rows: the products of up to 8
      for (const [rows, inF, outF, wdtype] of [[12, 40, 24, "bf16"], [5, 37, 21, "f32"]] as const) {
        const ldx = inF + 3;
        const xf = randArray(r, rows * ldx), xb = toBf16(xf);
        const wf = randArray(r, outF * inF);
        const product = {
          ldx,
          w: m.put(wdtype === "bf16" ? toBf16(wf) : wf),
          wdtype,
          bias: m.put(randArray(r, outF)),
          n: rows,
          inF,
          outF,
        } as const;
        const res = randArray(r, rows * outF);
        const norm = {
          weight: m.put(randArray(r, outF, 0.5, 1.5)),
          bias: m.put(randArray(r, outF)),
          normKind: "rmsnorm",
          eps: 1e-5,
        } as const;
        for (const bf16Input of [false, true]) {
          const x = bf16Input ? m.put(xb) : m.put(xf);
          // the two calls
          const h = m.zeros(rows * outF * 4), res1 = m.put(res);
          const out1 = m.zeros(rows * outF * 4), ob1 = m.zeros(rows * outF * 2);
          if (bf16Input) be.linearBf16({ ...product, x, y: h });
          else be.linear({ ...product, x, y: h });
          be.addNorm({
            x: h,
            residual: res1,
            accumulate: true,
            ...norm,
            n: rows,
            d: outF,
            out: out1,
            outBf16: ob1,
          });
          // the one call
          const res2 = m.put(res), out2 = m.zeros(rows * outF * 4), ob2 = m.zeros(rows * outF * 2);
          be.linearAddNorm({
            ...product,
            x,
            xBf16: bf16Input,
            hScratch: m.zeros(rows * outF * 4),
            residual: res2,
            accumulate: true,
            normWeight: norm.weight,
            normBias: norm.bias,
            normKind: norm.normKind,
            eps: norm.eps,
            out: out2,
            outBf16: ob2,
          });
          const what = `${name} ${rows}x${inF}x${outF} ${wdtype} x ${bf16Input ? "bf16" : "f32"}`;
          assert.deepEqual(m.f32(res2, rows * outF), m.f32(res1, rows * outF), `${what}: residual`);
          assert.deepEqual(m.f32(out2, rows * outF), m.f32(out1, rows * outF), `${what}: out`);
          assert.deepEqual(m.u16(ob2, rows * outF), m.u16(ob1, rows * outF), `${what}: bf16`);
        }
      }
      // exactly one input
      const buf = m.zeros(4096);
      const call = (x: Ptr, xBf16: boolean) =>
        be.linearAddNorm({
          x,
          xBf16,
          w: buf,
          wdtype: "f32",
          bias: null,
          n: 2,
          inF: 4,
          outF: 3,
          hScratch: buf,
          residual: buf,
          accumulate: false,
          normWeight: buf,
          normBias: null,
          normKind: "layernorm",
          eps: 1e-5,
          out: buf,
        });
      assertInvalid(() => call(null, false), /exactly one of x and x_bf16/);
      assertInvalid(() => call(null, true), /exactly one of x and x_bf16/);
    });
  }
});

const SCAN_RTOL = 2e-5;

function checkScan(be: Backend, seed: number): void {
  const r = rng(seed);
  let i = 0;
  for (const batch of [1, 3]) {
    for (const len of [1, 5, 129]) {
      for (const [d, n] of [[37, 16], [16, 3], [20, 17], [5, 33]]) {
        const opts = {
          pad: i % 3,
          D: i % 2 === 0,
          z: i % 4 !== 1,
          state: i % 5 !== 2,
          softplus: i % 6 !== 3,
        };
        i++;
        const c = scanCase(r, batch, len, d, n, opts);
        const got = runScan(be, c, true);
        const exp = scanRef(c);
        const tag = `scan b=${batch} len=${len} d=${d} n=${n} ${JSON.stringify(opts)}`;
        // y: relative to sum |C h| + |D u| (the magnitude it is made of)
        const scale = new Float64Array(exp.y.length);
        for (let row = 0; row < batch * len; row++) {
          for (let ch = 0; ch < d; ch++) {
            let s = 0;
            for (let k = 0; k < n; k++) {
              s += Math.abs(c.C[row * c.ldbc + k] * exp.all[(row * d + ch) * n + k]);
            }
            s += c.D ? Math.abs(c.D[ch] * c.u[row * c.ld + ch]) : 0;
            scale[row * c.ld + ch] = s;
          }
        }
        assertClose(`${tag} y`, got.y, exp.y, SCAN_RTOL, 1e-6, scale);
        if (c.state) assertClose(`${tag} state`, got.state!, exp.state, SCAN_RTOL, 1e-6);
        assertClose(`${tag} states_all`, got.all!, exp.all, SCAN_RTOL, 1e-6);
      }
    }
  }
  // continuity: len a then len b (state carried) == len a + b; states_all[t] == final state of t+1
  for (const [a, b] of [[1, 1], [4, 9], [17, 3]]) {
    const batch = 2, d = 19, n = 16;
    const whole = scanCase(r, batch, a + b, d, n, { pad: 1 });
    const one = runScan(be, whole, true);
    const rowsOf = (arr: Float32Array, width: number, t0: number, cnt: number) => {
      const out = new Float32Array(batch * cnt * width);
      for (let bb = 0; bb < batch; bb++) {
        const src = (bb * (a + b) + t0) * width;
        out.set(arr.subarray(src, src + cnt * width), bb * cnt * width);
      }
      return out;
    };
    const part = (t0: number, cnt: number, state: Float32Array | null): ScanCase => ({
      ...whole,
      len: cnt,
      u: rowsOf(whole.u, whole.ld, t0, cnt),
      delta: rowsOf(whole.delta, whole.ld, t0, cnt),
      z: rowsOf(whole.z!, whole.ld, t0, cnt),
      B: rowsOf(whole.B, whole.ldbc, t0, cnt),
      C: rowsOf(whole.C, whole.ldbc, t0, cnt),
      state,
    });
    const first = runScan(be, part(0, a, whole.state), false);
    const second = runScan(be, part(a, b, first.state), false);
    assertClose(`scan continuity ${a}+${b} state`, second.state!, one.state!, 1e-6, 1e-7);
    const ySplit = [...rowsOf(one.y, whole.ld, a, b)];
    assertClose(`scan continuity ${a}+${b} y`, second.y, ySplit, 1e-6, 1e-7);
    for (let t = 0; t < a + b; t++) {
      const upTo = runScan(be, part(0, t + 1, whole.state), false);
      for (let bb = 0; bb < batch; bb++) {
        const at = one.all!.subarray(
          ((bb * (a + b)) + t) * d * n,
          ((bb * (a + b)) + t + 1) * d * n,
        );
        assertClose(
          `states_all[${t}]`,
          at,
          upTo.state!.subarray(bb * d * n, (bb + 1) * d * n),
          1e-6,
          1e-7,
        );
      }
    }
  }
}

// ---- selective_state_update_dt (dt_proj fused into the decoding step) ----------------------

function checkStateUpdateDt(be: Backend, seed: number): void {
  const r = rng(seed);
  const cases: [number, number, number, number, "f32" | "bf16", boolean, boolean][] = [
    // batch, d, n, dtRank, wdtype, bias + D + z, deltaOut
    [1, 37, 16, 8, "f32", true, true],
    [3, 21, 16, 13, "bf16", false, true],
    [2, 19, 5, 40, "bf16", true, false],
    [1, 12, 33, 7, "f32", true, true],
    // large enough for the threaded fused path (>= 64 KiB of dt_proj weights), d % 16 != 0
    [2, 600, 16, 64, "bf16", true, false],
    [1, 1100, 16, 40, "f32", false, true],
    // the update's runs of 32 blocks (and its prefetch) with n < 16: 33 full blocks + a partial one
    [2, 530, 7, 8, "f32", true, true],
    // more sequences than the skinny kernels take: the unfused fallback
    [9, 40, 16, 8, "f32", true, false],
  ];
  for (const [batch, d, n, R, wdtype, opt, withDelta] of cases) {
    const ldu = d + 1, ldx = R + 2 * n + 2, ldz = 2 * d, ldy = d + 3;
    const u = randArray(r, batch * ldu, -2, 2), x = randArray(r, batch * ldx);
    const z = randArray(r, batch * ldz, -3, 3);
    const w32 = randArray(r, d * R, -0.5, 0.5);
    const wdata = wdtype === "f32" ? w32 : toBf16(w32);
    const w = wdtype === "f32" ? w32 : fromBf16(wdata as Uint16Array);
    const bias = randArray(r, d, -4, -1), D = randArray(r, d);
    const A = new Float32Array(d * n);
    for (let i = 0; i < d * n; i++) A[i] = -Math.exp(Math.log(1 + (i % n)) + 0.3 * (r() - 0.5));
    const state = randArray(r, batch * d * n);
    // float64 reference
    const expY = new Float64Array(batch * ldy), expS = new Float64Array(batch * d * n);
    const expDelta = new Float64Array(batch * d);
    for (let b = 0; b < batch; b++) {
      for (let c = 0; c < d; c++) {
        let dot = opt ? bias[c] : 0;
        for (let k = 0; k < R; k++) dot += x[b * ldx + k] * w[c * R + k];
        expDelta[b * d + c] = dot;
        const dt = softplus(dot), uu = u[b * ldu + c];
        let acc = 0;
        for (let s = 0; s < n; s++) {
          const h = Math.exp(dt * A[c * n + s]) * state[(b * d + c) * n + s] +
            dt * x[b * ldx + R + s] * uu;
          expS[(b * d + c) * n + s] = h;
          acc += x[b * ldx + R + n + s] * h;
        }
        let yy = acc + (opt ? D[c] * uu : 0);
        if (opt) yy *= silu(z[b * ldz + c]);
        expY[b * ldy + c] = yy;
      }
    }
    withMem(be, (m) => {
      const xp = m.put(x), sp = m.put(state), yp = m.zeros(batch * ldy * 4);
      const dp = withDelta ? m.zeros(batch * d * 4) : null;
      const ybp = withDelta ? m.zeros(batch * ldy * 2) : null; // y as bf16 too, in those cases
      be.stateUpdateDt({
        u: m.put(u),
        ldu,
        xDbl: xp,
        ldXDbl: ldx,
        dtW: m.put(wdata),
        wdtype,
        dtBias: opt ? m.put(bias) : null,
        dtRank: R,
        A: m.put(A),
        B: offsetPtr(xp, R * 4),
        ldb: ldx,
        C: offsetPtr(xp, (R + n) * 4),
        ldc: ldx,
        D: opt ? m.put(D) : null,
        z: opt ? m.put(z) : null,
        ldz,
        state: sp,
        batch,
        d,
        n,
        deltaSoftplus: true,
        deltaOut: dp,
        y: yp,
        ldy,
        yBf16: ybp ?? undefined,
      });
      const tag = `state_update_dt b=${batch} d=${d} n=${n} R=${R} ${wdtype}`;
      const y = m.f32(yp, batch * ldy);
      if (ybp) { // the fp32 y rounded to nearest even, where it was written
        const yb = m.u16(ybp, batch * ldy), want = toBf16(y);
        for (let b = 0; b < batch; b++) {
          for (let c = 0; c < d; c++) {
            assert.equal(yb[b * ldy + c], want[b * ldy + c], `${tag} y_bf16`);
          }
        }
      }
      for (let b = 0; b < batch; b++) {
        assertClose(
          `${tag} y`,
          y.subarray(b * ldy, b * ldy + d),
          expY.subarray(b * ldy, b * ldy + d),
          SCAN_RTOL,
          1e-5,
        );
      }
      assertClose(`${tag} state`, m.f32(sp, batch * d * n), expS, SCAN_RTOL, 1e-5);
      if (dp) assertClose(`${tag} delta`, m.f32(dp, batch * d), expDelta, 1e-5, 1e-5);
    });
  }
  // argument validation
  withMem(be, (m) => {
    const p = m.zeros(4096);
    const base = {
      u: p,
      ldu: 4,
      xDbl: p,
      ldXDbl: 8,
      dtW: p,
      wdtype: "f32" as const,
      dtBias: null,
      dtRank: 4,
      A: p,
      B: p,
      ldb: 2,
      C: p,
      ldc: 2,
      D: null,
      z: null,
      ldz: 4,
      state: p,
      batch: 1,
      d: 4,
      n: 2,
      deltaSoftplus: true,
      deltaOut: null,
      y: p,
      ldy: 4,
    };
    assertInvalid(() => be.stateUpdateDt({ ...base, ldXDbl: 3 }), /ld_xdbl \(3\) < dt_rank \(4\)/);
    assertInvalid(() => be.stateUpdateDt({ ...base, state: null }), /state is NULL/);
    assertInvalid(() => be.stateUpdateDt({ ...base, dtW: null }), /dt_w is NULL/);
    assertInvalid(() => be.stateUpdateDt({ ...base, xDbl: null }), /x_dbl is NULL/);
    assertInvalid(() => be.stateUpdateDt({ ...base, dtRank: 0 }), /dt_rank \(0\) < 1/);
  });
}

// ---- the decoding steps' conv + product pairs ------------------------------------------------

/** float64 y = x W^T (+ bias) of n rows (packed, width outF); x's element (i, j) from xAt. */
function linearRef(
  n: number,
  inF: number,
  outF: number,
  xAt: (i: number, j: number) => number,
  w: Float32Array,
  bias: Float32Array | null,
): Float64Array {
  const y = new Float64Array(n * outF);
  for (let i = 0; i < n; i++) {
    for (let o = 0; o < outF; o++) {
      let acc = bias ? bias[o] : 0;
      for (let j = 0; j < inF; j++) acc += xAt(i, j) * w[o * inF + j];
      y[i * outF + o] = acc;
    }
  }
  return y;
}

/** Each of n rows of `got` (at ld) against `exp`'s (packed, width), within 1e-5. */
function assertRowsClose(
  tag: string,
  got: Float32Array,
  ld: number,
  exp: Float64Array,
  width: number,
  n: number,
): void {
  for (let i = 0; i < n; i++) {
    assertClose(
      tag,
      got.subarray(i * ld, i * ld + width),
      exp.subarray(i * width, (i + 1) * width),
      1e-5,
      1e-5,
    );
  }
}

// ---- linear_conv1d_step (in_proj + conv step, decoding) -------------------------------------

function checkLinearConv1dStep(be: Backend, seed: number): void {
  const r = rng(seed);
  const cases: [number, number, number, number, number, "f32" | "bf16", boolean][] = [
    // n, inF, outF, dConv, k, wdtype, biases
    [1, 24, 40, 20, 4, "f32", true],
    [3, 17, 30, 30, 3, "bf16", false],
    [2, 9, 12, 5, 1, "f32", true],
    [10, 16, 8, 4, 4, "bf16", true],
    // threaded (>= 64 KiB of weights): each thread takes a share of the conv's rows (and
    // convolves those channels) and a share of the rows after them; all rows the conv's
    [2, 160, 330, 165, 4, "bf16", true],
    [1, 100, 400, 200, 3, "f32", false],
    [1, 200, 200, 200, 4, "f32", true],
  ];
  for (const [n, inF, outF, dc, k, wdtype, opt] of cases) {
    const ldx = inF + 1, ldy = outF + 2, ldo = dc + 3, km = Math.max(k - 1, 1);
    const x = randArray(r, n * ldx), w32 = randArray(r, outF * inF, -0.3, 0.3);
    const wdata = wdtype === "f32" ? w32 : toBf16(w32);
    const w = wdtype === "f32" ? w32 : fromBf16(wdata as Uint16Array);
    const bias = randArray(r, outF), cw = randArray(r, dc * k), cb = randArray(r, dc);
    const st = randArray(r, n * dc * km);
    const expY = linearRef(n, inF, outF, (i, j) => x[i * ldx + j], w, opt ? bias : null);
    // the conv reads y's first dc columns as float32
    const conv = convRef({
      batch: n,
      len: 1,
      d: dc,
      k,
      ldx: outF,
      ldo: dc,
      x: Float32Array.from(expY),
      w: cw,
      bias: opt ? cb : null,
      state: st,
    });
    const expXc = conv.out, expSt = conv.state;
    withMem(be, (m) => {
      const yp = m.zeros(n * ldy * 4), xcp = m.zeros(n * ldo * 4), sp = m.put(st);
      be.linearConv1dStep({
        x: m.put(x),
        ldx,
        w: m.put(wdata),
        wdtype,
        bias: opt ? m.put(bias) : null,
        n,
        inF,
        outF,
        y: yp,
        ldy,
        convW: m.put(cw),
        convBias: opt ? m.put(cb) : null,
        convState: sp,
        dConv: dc,
        k,
        xc: xcp,
        ldo,
      });
      const tag = `linear_conv1d_step n=${n} ${outF}x${inF} dc=${dc} k=${k} ${wdtype}`;
      assertRowsClose(`${tag} y`, m.f32(yp, n * ldy), ldy, expY, outF, n);
      assertRowsClose(`${tag} xc`, m.f32(xcp, n * ldo), ldo, expXc, dc, n);
      if (k > 1) assertClose(`${tag} state`, m.f32(sp, n * dc * (k - 1)), expSt, 1e-5, 1e-5);
    });
  }
  withMem(be, (m) => {
    const p = m.zeros(4096);
    const base = {
      x: p,
      w: p,
      wdtype: "f32" as const,
      bias: null,
      n: 1,
      inF: 4,
      outF: 8,
      y: p,
      convW: p,
      convBias: null,
      convState: p,
      dConv: 4,
      k: 4,
      xc: p,
    };
    assertInvalid(() => be.linearConv1dStep({ ...base, dConv: 9 }), /d_conv \(9\) > out_f \(8\)/);
    assertInvalid(() => be.linearConv1dStep({ ...base, convState: null }), /conv_state is NULL/);
    assertInvalid(() => be.linearConv1dStep({ ...base, k: 0 }), /k \(0\) < 1/);
  });
}

// ---- conv1d_step_linear (conv step + x_proj, decoding batches) -------------------------------

function checkConv1dStepLinear(be: Backend, seed: number): void {
  const r = rng(seed);
  const cases: [number, number, number, number, "f32" | "bf16", boolean][] = [
    // n, d, outF, k, wdtype, biases
    [1, 24, 40, 4, "f32", true],
    [9, 40, 20, 3, "bf16", false],
    [12, 33, 17, 1, "f32", true],
    [20, 200, 44, 4, "bf16", true],
  ];
  for (const [n, d, outF, k, wdtype, opt] of cases) {
    const ldx = 2 * d + 1, ldy = outF + 2, ldo = d + 3, km = Math.max(k - 1, 1);
    const x = randArray(r, n * ldx), w32 = randArray(r, outF * d, -0.3, 0.3);
    const wdata = wdtype === "f32" ? w32 : toBf16(w32);
    const w = wdtype === "f32" ? w32 : fromBf16(wdata as Uint16Array);
    const bias = randArray(r, outF), cw = randArray(r, d * k), cb = randArray(r, d);
    const st = randArray(r, n * d * km);
    const conv = convRef({
      batch: n,
      len: 1,
      d,
      k,
      ldx,
      ldo: d,
      x,
      w: cw,
      bias: opt ? cb : null,
      state: st,
    });
    const expXc = conv.out, expSt = conv.state;
    // x_proj reads the conv's output as float32
    const expY = linearRef(
      n,
      d,
      outF,
      (i, c) => Math.fround(expXc[i * d + c]),
      w,
      opt ? bias : null,
    );
    withMem(be, (m) => {
      const yp = m.zeros(n * ldy * 4), xcp = m.zeros(n * ldo * 4), sp = m.put(st);
      be.conv1dStepLinear({
        x: m.put(x),
        ldx,
        convW: m.put(cw),
        convBias: opt ? m.put(cb) : null,
        convState: sp,
        n,
        d,
        k,
        xc: xcp,
        ldo,
        w: m.put(wdata),
        wdtype,
        bias: opt ? m.put(bias) : null,
        outF,
        y: yp,
        ldy,
      });
      const tag = `conv1d_step_linear n=${n} d=${d} out=${outF} k=${k} ${wdtype}`;
      assertRowsClose(`${tag} y`, m.f32(yp, n * ldy), ldy, expY, outF, n);
      assertRowsClose(`${tag} xc`, m.f32(xcp, n * ldo), ldo, expXc, d, n);
      if (k > 1) assertClose(`${tag} state`, m.f32(sp, n * d * (k - 1)), expSt, 1e-5, 1e-5);
    });
  }
  withMem(be, (m) => {
    const p = m.zeros(4096);
    const base = {
      x: p,
      ldx: 8,
      convW: p,
      convBias: null,
      convState: p,
      n: 2,
      d: 4,
      k: 4,
      xc: p,
      w: p,
      wdtype: "f32" as const,
      bias: null,
      outF: 8,
      y: p,
    };
    assertInvalid(() => be.conv1dStepLinear({ ...base, ldx: 3 }), /ldx \(3\) < d \(4\)/);
    assertInvalid(() => be.conv1dStepLinear({ ...base, convState: null }), /conv_state is NULL/);
    assertInvalid(() => be.conv1dStepLinear({ ...base, k: 0 }), /k \(0\) < 1/);
  });
}

// ---- linear_bf16_conv1d_step_linear (in_proj, conv step, x_proj: decoding batches) -----------

function checkLinearBf16Conv1dStepLinear(be: Backend, seed: number): void {
  const r = rng(seed);
  const cases: [number, number, number, number, number, number, "f32" | "bf16", boolean][] = [
    // n, inF, d, outF, outF2, k, wdtype, conv bias
    [9, 64, 48, 96, 20, 4, "bf16", true],
    [1, 30, 20, 50, 7, 3, "f32", false],
    [12, 128, 64, 128, 36, 4, "bf16", true],
    [3, 16, 8, 8, 0, 2, "bf16", false],
  ];
  for (const [n, inF, d, outF, outF2, k, wdtype, cbias] of cases) {
    const ldx = inF + 3, ldy = outF + 1, ldo = d + 2, ldy2 = outF2 + 5;
    const xb = toBf16(randArray(r, n * ldx)), xf = fromBf16(xb);
    const weight = (count: number) => {
      const w32 = randArray(r, count, -0.3, 0.3);
      return wdtype === "f32"
        ? { data: w32 as Float32Array | Uint16Array, f: w32 }
        : { data: toBf16(w32), f: fromBf16(toBf16(w32)) };
    };
    const w = weight(outF * inF), w2 = weight(outF2 * d);
    const cw = randArray(r, d * k), cb = randArray(r, d), st = randArray(r, n * d * (k - 1));
    // in_proj in float64 from the bf16 rows; the conv reads its float32 output, x_proj the conv's
    const xz = linearRef(n, inF, outF, (i, j) => xf[i * ldx + j], w.f, null);
    const conv = convRef({
      batch: n,
      len: 1,
      d,
      k,
      ldx: outF,
      ldo: d,
      x: Float32Array.from(xz),
      w: cw,
      bias: cbias ? cb : null,
      state: st,
    });
    const expY2 = linearRef(n, d, outF2, (i, c) => Math.fround(conv.out[i * d + c]), w2.f, null);
    withMem(be, (m) => {
      const yp = m.zeros(n * ldy * 4), xcp = m.zeros(n * ldo * 4), sp = m.put(st);
      const y2p = m.zeros(Math.max(n * ldy2, 1) * 4);
      be.linearBf16Conv1dStepLinear({
        x: m.put(xb),
        ldx,
        w: m.put(w.data),
        wdtype,
        n,
        inF,
        outF,
        y: yp,
        ldy,
        convW: m.put(cw),
        convBias: cbias ? m.put(cb) : null,
        convState: sp,
        d,
        k,
        xc: xcp,
        ldo,
        w2: m.put(w2.data),
        outF2,
        y2: y2p,
        ldy2,
      });
      const tag = `linear_bf16_conv1d_step_linear n=${n} in=${inF} d=${d} out=${outF} ` +
        `out2=${outF2} k=${k} ${wdtype}`;
      // y's columns past d (z); its first d may be left unwritten by a fused backend
      const y = m.f32(yp, n * ldy);
      for (let i = 0; i < n; i++) {
        assertClose(
          `${tag} y[${i}] past d`,
          y.subarray(i * ldy + d, i * ldy + outF),
          xz.subarray(i * outF + d, (i + 1) * outF),
          1e-5,
          1e-5,
        );
      }
      assertRowsClose(`${tag} xc`, m.f32(xcp, n * ldo), ldo, conv.out, d, n);
      if (k > 1) assertClose(`${tag} state`, m.f32(sp, n * d * (k - 1)), conv.state, 1e-5, 1e-5);
      if (outF2 > 0) assertRowsClose(`${tag} y2`, m.f32(y2p, n * ldy2), ldy2, expY2, outF2, n);
    });
  }
  withMem(be, (m) => {
    const p = m.zeros(4096);
    const base = {
      x: p,
      w: p,
      wdtype: "bf16" as const,
      n: 2,
      inF: 8,
      outF: 8,
      y: p,
      convW: p,
      convBias: null,
      convState: p,
      d: 4,
      k: 4,
      xc: p,
      w2: p,
      outF2: 4,
      y2: p,
    };
    const call = (o: Partial<typeof base> & { ldx?: number }) =>
      be.linearBf16Conv1dStepLinear({ ...base, ...o });
    assertInvalid(() => call({ d: 9 }), /d \(9\) not in 1\.\.out_f \(8\)/);
    assertInvalid(() => call({ ldx: 7 }), /ldx \(7\) < in_f \(8\)/);
    assertInvalid(() => call({ convState: null }), /conv_state is NULL/);
    assertInvalid(() => call({ k: 0 }), /k \(0\) < 1/);
    assertInvalid(() => call({ y2: null }), /y2 is NULL/);
  });
}

// ---- log-softmax, log-prob and rank ----------------------------------------------------------

function checkLogSoftmax(be: Backend, seed: number): void {
  const r = rng(seed);
  for (const [n, v] of [[1, 1], [3, 17], [4, 256], [2, 1000]]) {
    withMem(be, (m) => {
      const logits = randArray(r, n * v, -8, 8);
      // ties for the rank
      for (let i = 0; i < n; i++) logits[i * v + (v - 1)] = logits[i * v];
      const lp = m.put(logits);
      const out = m.zeros(n * v * 4);
      be.logSoftmax({ logits: lp, n, v, out });
      const targets = Int32Array.from({ length: n }, (_, i) => i === 0 ? 0 : Math.floor(r() * v));
      const lpOut = m.zeros(n * 4), rank = m.zeros(n * 4);
      be.logprobRank({ logits: lp, n, v, targets: m.put(targets), logprob: lpOut, rank });
      const exp = new Float64Array(n * v), expLp: number[] = [], expRank: number[] = [];
      for (let i = 0; i < n; i++) {
        const row = logits.subarray(i * v, (i + 1) * v);
        const mx = Math.max(...row);
        let s = 0;
        for (const x of row) s += Math.exp(x - mx);
        const lse = mx + Math.log(s);
        for (let k = 0; k < v; k++) exp[i * v + k] = row[k] - lse;
        expLp.push(row[targets[i]] - lse);
        expRank.push(row.filter((x) => x > row[targets[i]]).length);
      }
      assertClose(`log_softmax n=${n} v=${v}`, m.f32(out, n * v), exp, 1e-5, 2e-6);
      assertClose(`logprob n=${n} v=${v}`, m.f32(lpOut, n), expLp, 1e-5, 2e-6);
      assert.deepEqual([...m.i32(rank, n)], expRank);
      // in place
      be.logSoftmax({ logits: lp, n, v, out: lp });
      assertClose(`log_softmax in place`, m.f32(lp, n * v), exp, 1e-5, 2e-6);
    });
  }
}

// ---- sample --------------------------------------------------------------------------------

/** mamba_ssm's sample() with the ABI's draw rule (descending order, first cum > u * total). */
function sampleRef(
  row: Float32Array,
  temperature: number,
  topK: number,
  topP: number,
  u: number,
): number {
  const v = row.length;
  if (topK === 1) {
    let best = 0;
    for (let i = 1; i < v; i++) if (row[i] > row[best]) best = i;
    return best;
  }
  const k = topK <= 0 || topK >= v ? v : topK;
  const idx = Array.from({ length: v }, (_, i) => i).sort((a, b) => row[b] - row[a] || a - b)
    .slice(0, k);
  const mx = row[idx[0]] / temperature;
  const p = idx.map((i) => Math.exp(row[i] / temperature - mx));
  let total = p.reduce((a, b) => a + b, 0);
  let kept = k;
  if (topP > 0 && topP < 1) {
    // ascending cumulative probability; drop where <= 1 - top_p (keep the most probable)
    let tail = 0;
    kept = 1;
    for (let i = k - 1; i > 0; i--) {
      tail += p[i] / total;
      if (tail > 1 - topP) {
        kept = i + 1;
        break;
      }
    }
    total = p.slice(0, kept).reduce((a, b) => a + b, 0);
  }
  let cum = 0;
  for (let i = 0; i < kept; i++) {
    cum += p[i];
    if (cum > u * total) return idx[i];
  }
  return idx[kept - 1];
}

/** sampleRef's draw of each of n rows of logits (v wide), row b with uniform u(b). */
function expectedDraws(
  logits: Float32Array,
  n: number,
  v: number,
  [temperature, topK, topP]: number[],
  u: (b: number) => number,
): number[] {
  return Array.from(
    { length: n },
    (_, b) => sampleRef(logits.subarray(b * v, (b + 1) * v), temperature, topK, topP, u(b)),
  );
}

function checkSample(be: Backend, seed: number): void {
  const r = rng(seed);
  const settings: [number, number, number][] = [
    [1, 1, 1], // greedy
    [1.0, 0, 1.0], // plain multinomial
    [0.7, 0, 0.9],
    [1.3, 5, 1.0],
    [1.0, 40, 0.98],
    [0.5, 300, 0.5],
    [1.0, 2, 0.1],
  ];
  for (const [batch, v] of [[1, 1], [3, 256], [5, 37]]) {
    for (const [temperature, topK, topP] of settings) {
      withMem(be, (m) => {
        const logits = randArray(r, batch * v, -4, 4);
        if (v > 3) logits[2] = logits[0] = Math.max(...logits.subarray(0, v)) + 1; // a tie for argmax
        const lp = m.put(logits);
        const counter = m.put(new BigInt64Array([7n]));
        const out = m.zeros(batch * 4);
        const seedB = BigInt(Math.floor(r() * 2 ** 32)) << 16n;
        for (let step = 7; step < 10; step++) {
          be.sample({ logits: lp, batch, v, temperature, topK, topP, seed: seedB, counter, out });
          const got = [...m.i32(out, batch)];
          const exp = expectedDraws(
            logits,
            batch,
            v,
            [temperature, topK, topP],
            (b) => uniform(seedB, BigInt(step * batch + b)),
          );
          assert.deepEqual(got, exp, `sample v=${v} T=${temperature} k=${topK} p=${topP}`);
          if (topK === 1 && v > 3) assert.equal(got[0], 0); // lowest index on ties
        }
        const c = new BigInt64Array(1);
        be.download(c, counter);
        assert.equal(c[0], 10n);
      });
    }
  }
  // sampleRows: row b drawn with its own counter (as a batch-1 sample with counter b), each
  // counter then incremented
  for (const [n, v] of [[1, 5], [8, 256], [3, 37]]) {
    for (const [temperature, topK, topP] of settings) {
      withMem(be, (m) => {
        const logits = randArray(r, n * v, -4, 4);
        const lp = m.put(logits);
        const start = BigInt64Array.from({ length: n }, (_, b) => BigInt(3 * b + 11));
        const counters = m.put(start);
        const out = m.zeros(n * 4);
        const seedB = BigInt(Math.floor(r() * 2 ** 32)) << 16n;
        for (let step = 0; step < 2; step++) {
          be.sampleRows({ logits: lp, n, v, temperature, topK, topP, seed: seedB, counters, out });
          const got = [...m.i32(out, n)];
          const exp = expectedDraws(
            logits,
            n,
            v,
            [temperature, topK, topP],
            (b) => uniform(seedB, start[b] + BigInt(step)),
          );
          assert.deepEqual(got, exp, `sampleRows n=${n} v=${v} T=${temperature} k=${topK}`);
        }
        const c = new BigInt64Array(n);
        be.download(c, counters);
        assert.deepEqual([...c], [...start].map((x) => x + 2n));
      });
    }
  }
  // uniform: deterministic, in [0, 1), 24 bits
  const u = uniform(4740n, 3n);
  assert.equal(u, uniform(4740n, 3n));
  assert.ok(u >= 0 && u < 1 && Number.isInteger(u * 2 ** 24));
}

// ---- read probe ------------------------------------------------------------------------------

function checkReadProbe(be: Backend, seed: number): void {
  const r = rng(seed);
  withMem(be, (m) => {
    const a = randArray(r, 16 * 1001, 0, 1);
    const sink = m.zeros(4);
    be.readProbe(m.put(a), a.byteLength, sink);
    const s = a.reduce((x, y) => x + y, 0);
    assertClose("read_probe checksum", m.f32(sink, 1), [s], 1e-5, 0);
  });
}

// ---- spec_commit (the end of a device round of speculative decoding) -------------------------

function checkSpecCommit(be: Backend, seed: number): void {
  const r = rng(seed);
  withMem(be, (m) => {
    for (const [len, bytes, stride, cap] of [[8, 4096, 4096, 40], [1, 12, 20, 3], [13, 7, 9, 30]]) {
      const count = len; // states after 0..len-1 drafts
      const stack = new Uint8Array(count * stride).map(() => Math.floor(r() * 256));
      const src = m.put(stack), dst = m.zeros(bytes);
      const out = m.put(new Int32Array(cap).fill(-7));
      const ids = m.zeros(4), counters = m.zeros(8 * len), progress = m.zeros(24);
      const sampled = Int32Array.from({ length: len }, () => Math.floor(r() * 256));
      const sp = m.put(sampled), acc = m.zeros(4);
      // Rounds that end in turn at j = len - 1, 0 and a middle one, the last running past cap.
      const want = new Int32Array(cap).fill(-7);
      let e = cap - 2 * len - 1, accSum = 0, rounds = 0;
      be.upload(progress, BigInt64Array.of(BigInt(e), 0n, 0n));
      for (const j of [len - 1, 0, len >> 1, len - 1]) {
        be.upload(acc, Int32Array.of(j));
        be.specCommit({
          len,
          sampled: sp,
          accepted: acc,
          out,
          cap,
          progress,
          ids,
          counters,
          dst,
          src,
          srcStride: stride,
          bytes,
        });
        for (let t = 0; t <= j; t++) if (e + t < cap) want[e + t] = sampled[t];
        e += j + 1;
        accSum += j;
        rounds++;
        const what = `len ${len} j ${j}`;
        const prog = new BigInt64Array(3);
        be.download(prog, progress);
        assert.deepEqual([...prog].map(Number), [e, accSum, rounds], `${what}: progress`);
        assert.deepEqual(m.i32(out, cap), want, `${what}: out`);
        assert.equal(m.i32(ids, 1)[0], sampled[j], `${what}: ids[0]`);
        const ctr = new BigInt64Array(len);
        be.download(ctr, counters);
        assert.deepEqual([...ctr].map(Number), Array.from({ length: len }, (_, t) => e + t));
        const state = new Uint8Array(bytes);
        be.download(state, dst);
        assert.deepEqual(state, stack.subarray(j * stride, j * stride + bytes), `${what}: state`);
      }
    }
  });
}

// ---- scaled fp16 operands (to_f16_scaled, linear_f16, add_norm_f16) -------------------------

/** floor(log2(a)) of a finite a > 0, exactly (Math.log2 alone may be off by one near 2^k). */
function ilog2(a: number): number {
  let e = Math.floor(Math.log2(a));
  while (2 ** e > a) e--;
  while (2 ** (e + 1) <= a) e++;
  return e;
}

/** v (exact in float64) rounded to fp16's value: nearest even, inf from 65520 up, -0 kept. */
function roundF16(v: number): number {
  if (v === 0 || !Number.isFinite(v)) return v;
  const a = Math.abs(v);
  if (a >= 65520) return v < 0 ? -Infinity : Infinity;
  const q = 2 ** (Math.max(ilog2(a), -14) - 10); // fp16's spacing at a (2^-24 for subnormals)
  const t = a / q, f = Math.floor(t), d = t - f;
  const r = (d > 0.5 || (d === 0.5 && f % 2 === 1) ? f + 1 : f) * q;
  return v < 0 ? -r : r;
}

/** The header's power of two for a largest magnitude: amax = m 2^E, m in [0.5, 1) -> 15 - E;
 * 0 for 0, inf and NaN. */
function scaleExp(amax: number): number {
  return amax > 0 && Number.isFinite(amax) ? 14 - ilog2(amax) : 0;
}

/** max |v| over the elements, NaN skipped (inf counts). */
function amaxOf(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) if (Math.abs(a[i]) > m) m = Math.abs(a[i]);
  return m;
}

/** fp32 bits of a Float32Array (bit-for-bit comparisons: -0 and NaN payloads included). */
const bitsOf = (a: Float32Array) => new Uint32Array(a.slice().buffer);

/** Runs to_f16_scaled on (rows, cols) of x at ld ldx: the fp16 bits (dense) and e. */
function toF16(
  be: Backend,
  m: Mem,
  x: Ptr,
  ldx: number,
  rows: number,
  cols: number,
): { h: Uint16Array; e: number } {
  const out = m.zeros(rows * cols * 2), outExp = m.put(new Int32Array([12345]));
  be.toF16Scaled({ x, ldx, rows, cols, out, outExp });
  return { h: m.u16(out, rows * cols), e: m.i32(outExp, 1)[0] };
}

function checkToF16Scaled(be: Backend, seed: number): void {
  const r = rng(seed);
  const spread = (n: number) =>
    Float32Array.from(
      { length: n },
      (_, i) =>
        i % 11 === 0 ? 0 : (r() < 0.5 ? -1 : 1) * (0.5 + r()) * 10 ** Math.round(-12 + 24 * r()),
    );
  const blocks: [string, number, number, number, Float32Array][] = [
    // name, rows, cols, ldx, the rows' values (rows x cols, padded to ldx below)
    ["spread", 5, 37, 40, spread(5 * 37)],
    ["uniform", 17, 33, 33, randArray(r, 17 * 33)],
    [
      "1e30 and 1e-30",
      2,
      9,
      11,
      Float32Array.from([1e30, 1e-30, -1e30, 3, -2e-30, 1e29, ...randArray(r, 12)]),
    ],
    ["all zero", 3, 4, 5, Float32Array.from([0, -0, 0, 0, 0, 0, -0, 0, 0, 0, 0, 0])],
    [
      "inf",
      2,
      6,
      6,
      Float32Array.from([Infinity, -3, 1e5, 1e-6, 0.5, -Infinity, 7, 65519, 65520, -1e-8, 0, 2]),
    ],
    ["nan", 2, 7, 9, Float32Array.from([NaN, 0.25, -3.5, 1e-3, -NaN, 2, 1, ...randArray(r, 7)])],
    // largest 2^14 (e = 0): ties of fp16 subnormals and normals, to nearest even
    [
      "ties",
      1,
      10,
      10,
      Float32Array.from([
        2 ** 14,
        2 ** -25,
        3 * 2 ** -25,
        5 * 2 ** -25,
        -3 * 2 ** -25,
        1 + 2 ** -11,
        1 + 3 * 2 ** -11,
        2 ** -14 - 2 ** -25,
        2 ** -26 + 2 ** -40,
        -(2 ** -25),
      ]),
    ],
    [
      "float subnormals",
      1,
      8,
      8,
      Float32Array.from([1e-40, 3e-45, -1.4e-45, 1e-39, -5e-41, 0, 2e-44, 1.1e-38]),
    ],
    ["near fp32's largest", 1, 5, 5, Float32Array.from([3e38, -1e38, 1, -3.4028234e38, 1e30])],
  ];
  for (const [name, rows, cols, ldx, vals] of blocks) {
    withMem(be, (m) => {
      // padding columns hold huge values: read, they would change e
      const x = new Float32Array(rows * ldx).fill(3e38);
      for (let i = 0; i < rows; i++) x.set(vals.subarray(i * cols, (i + 1) * cols), i * ldx);
      const { h, e } = toF16(be, m, m.put(x), ldx, rows, cols);
      const amax = amaxOf(vals);
      const tag = `to_f16_scaled ${name}`;
      assert.equal(e, scaleExp(amax), `${tag}: e`);
      if (amax > 0 && Number.isFinite(amax)) {
        const top = amax * 2 ** e;
        assert.ok(top >= 2 ** 14 && top < 2 ** 15, `${tag}: largest scaled to ${top}`);
      }
      for (let i = 0; i < rows; i++) {
        for (let j = 0; j < cols; j++) {
          const v = x[i * ldx + j], got = fromF16(h[i * cols + j]);
          const at = `${tag}: (${i}, ${j}) = ${v}: got ${got} (bits ${h[i * cols + j]})`;
          if (Number.isNaN(v)) {
            assert.ok(Number.isNaN(got), at);
            continue;
          }
          // the value scaled (exact in float64) and rounded to nearest even, bit for bit
          assert.ok(Object.is(got, roundF16(v * 2 ** e)), `${at}, want ${roundF16(v * 2 ** e)}`);
          if (!Number.isFinite(amax) || amax === 0) continue; // unscaled: overflow allowed
          const err = Math.abs(got * 2 ** -e - v);
          if (Math.abs(v) >= 2 ** -24 * amax) assert.ok(err <= 2 ** -11 * Math.abs(v), at);
          else assert.ok(err <= 2 ** -25 * amax, at);
        }
      }
    });
  }
}

function checkLinearF16(be: Backend, seed: number): void {
  const r = rng(seed);
  for (
    const [n, inF, outF, mag] of [[1, 5, 7, 0], [3, 33, 7, 0], [17, 5, 7, 0], [17, 33, 7, 0], [
      3,
      33,
      7,
      1,
    ]]
  ) {
    for (const withBias of [false, true]) {
      for (const accumulate of [false, true]) {
        withMem(be, (m) => {
          const ldx = n === 1 ? inF : inF + 3, ldy = n === 1 ? outF : outF + 2;
          // mag 1: operands far from 1 (x ~ 2^70, w ~ 2^-80), so the exponents matter
          const xs = mag ? 2 ** 70 : 1, ws = mag ? 2 ** -80 : 1;
          const x = randArray(r, n * ldx).map((v, k) => k % ldx < inF ? v * xs : 1e30);
          const w = randArray(r, outF * inF).map((v) => v * ws);
          const bias = withBias ? randArray(r, outF) : null;
          const y0 = randArray(r, n * ldy);
          const xp = m.put(x);
          const wh = toF16(be, m, m.put(w), inF, outF, inF), xh = toF16(be, m, xp, ldx, n, inF);
          const wF16 = m.put(wh.h), wExp = m.put(new Int32Array([wh.e]));
          // x_f16 at ldx, its padding NaN (read, it would poison the sums)
          const xhPad = new Uint16Array(n * ldx).fill(0x7e00);
          for (let i = 0; i < n; i++) xhPad.set(xh.h.subarray(i * inF, (i + 1) * inF), i * ldx);
          const common = {
            ldx,
            wF16,
            wExp,
            bias: bias ? m.put(bias) : null,
            n,
            inF,
            outF,
            ldy,
            accumulate,
          };
          const yA = m.put(y0), yB = m.put(y0);
          be.linearF16({ ...common, x: xp, y: yA });
          be.linearF16({
            ...common,
            xF16: m.put(xhPad),
            xExp: m.put(new Int32Array([xh.e])),
            y: yB,
          });
          const got = m.f32(yA, n * ldy);
          const tag = `linear_f16 n=${n} in=${inF} out=${outF} mag=${mag} bias=${withBias} ` +
            `acc=${accumulate}`;
          // x as fp32 is rounded as to_f16_scaled rounds it: the same product either way
          assert.deepEqual(bitsOf(got), bitsOf(m.f32(yB, n * ldy)), `${tag}: x vs x_f16`);
          const { expR, scaleR, expF, scaleF } = f16ProductRefs({
            n,
            inF,
            outF,
            ldx,
            ldy,
            x,
            w,
            wh: wh.h,
            xr: (i, k) => fromF16(xh.h[i * inF + k]),
            s: 2 ** -(xh.e + wh.e),
            bias,
            y0,
            accumulate,
          });
          // padding columns of y stay untouched (exact); the product of the rounded operands
          // within fp32 accumulation's error, that of the fp32 operands within fp16 rounding's
          assertClose(`${tag} (rounded operands)`, got, expR, 1e-5, 1e-12, scaleR);
          assertClose(`${tag} (fp32 operands)`, got, expF, 2e-3, 1e-12, scaleF);
          // yF16 (no bias, no accumulate): the fp32 y times 2^(ex + ew - 15 - c) rounded to fp16
          // at ldy, c = ceil(log2(inF)); the exponent written to yExp
          if (!withBias && !accumulate) {
            const yh = m.zeros(n * ldy * 2), yExp = m.put(new Int32Array([77]));
            be.linearF16({ ...common, x: xp, y: null, yF16: yh, yExp });
            const c = Math.ceil(Math.log2(inF)), ey = xh.e + wh.e - 15 - c;
            assert.equal(m.i32(yExp, 1)[0], ey, `${tag}: yF16's exponent`);
            const h = m.u16(yh, n * ldy);
            for (let i = 0; i < n; i++) {
              for (let o = 0; o < outF; o++) {
                const want = roundF16(got[i * ldy + o] * 2 ** ey);
                assert.ok(Object.is(fromF16(h[i * ldy + o]), want), `${tag}: yF16 ${i},${o}`);
              }
            }
          }
        });
      }
    }
  }
}

/**
 * float64 references of mb_linear_f16's y = s (xr wh^T) + bias (+ y0 when accumulating): with the
 * rounded operands (xr(i, k): x's row i, column k as scaled fp16; wh: the weight's fp16 bits),
 * and with the fp32 ones (x, w); each with its sum of magnitudes, the tolerances' scale. Rows of y
 * at ldy, padding columns left as y0.
 */
function f16ProductRefs(a: {
  n: number;
  inF: number;
  outF: number;
  ldx: number;
  ldy: number;
  x: ArrayLike<number>;
  w: ArrayLike<number>;
  wh: Uint16Array;
  xr: (i: number, k: number) => number;
  s: number;
  bias: ArrayLike<number> | null;
  y0: ArrayLike<number>;
  accumulate: boolean;
}) {
  const { n, inF, outF, ldx, ldy, x, w, wh, bias, y0, accumulate, s } = a;
  const expR = Float64Array.from(y0), scaleR = new Float64Array(n * ldy);
  const expF = Float64Array.from(y0), scaleF = new Float64Array(n * ldy);
  for (let i = 0; i < n; i++) {
    for (let o = 0; o < outF; o++) {
      const base = (bias ? bias[o] : 0) + (accumulate ? y0[i * ldy + o] : 0);
      const abase = Math.abs(bias ? bias[o] : 0) + (accumulate ? Math.abs(y0[i * ldy + o]) : 0);
      let sr = 0, ar = 0, sf = 0, af = 0;
      for (let k = 0; k < inF; k++) {
        const pr = a.xr(i, k) * fromF16(wh[o * inF + k]);
        const pf = x[i * ldx + k] * w[o * inF + k];
        sr += pr;
        ar += Math.abs(pr);
        sf += pf;
        af += Math.abs(pf);
      }
      expR[i * ldy + o] = s * sr + base;
      scaleR[i * ldy + o] = s * ar + abase;
      expF[i * ldy + o] = sf + base;
      scaleF[i * ldy + o] = af + abase;
    }
  }
  return { expR, scaleR, expF, scaleF };
}

function checkAddNormF16(be: Backend, seed: number): void {
  const r = rng(seed);
  for (const [normKind, withBias] of [["layernorm", true], ["rmsnorm", false]] as const) {
    for (const [n, d] of [[1, 1], [3, 37], [2, 1024]]) {
      for (const [accumulate, alias] of [[false, false], [true, false], [false, true]]) {
        withMem(be, (m) => {
          const x = randArray(r, n * d, -2, 2), res = randArray(r, n * d, -3, 3);
          const w = randArray(r, d, -1.5, 1.5), b = withBias ? randArray(r, d) : null;
          const eps = 1e-5;
          const common = {
            accumulate,
            weight: m.put(w),
            bias: b ? m.put(b) : null,
            normKind,
            eps,
            n,
            d,
          };
          // mb_add_norm on copies: the fp32 rows and residual to match
          const rRef = m.put(res), outRef = m.zeros(n * d * 4);
          be.addNorm({ ...common, x: alias ? rRef : m.put(x), residual: rRef, out: outRef });
          const rp = m.put(res), outF16 = m.zeros(n * d * 2), outExp = m.put(new Int32Array([9]));
          be.addNormF16({ ...common, x: alias ? rp : m.put(x), residual: rp, outF16, outExp });
          const tag = `add_norm_f16 ${normKind} n=${n} d=${d} acc=${accumulate} alias=${alias}`;
          assert.deepEqual(
            bitsOf(m.f32(rp, n * d)),
            bitsOf(m.f32(rRef, n * d)),
            `${tag}: residual`,
          );
          // e from the bound sqrtf(d) max|w| + max|b|, in fp32 as the backends compute it
          const f = Math.fround;
          const bound = f(f(f(Math.sqrt(d)) * amaxOf(w)) + (b ? amaxOf(b) : 0));
          const e = m.i32(outExp, 1)[0];
          assert.equal(e, scaleExp(bound), `${tag}: e`);
          assert.ok(bound * 2 ** e >= 2 ** 14 && bound * 2 ** e < 2 ** 15, `${tag}: bound`);
          const ref = m.f32(outRef, n * d), h = m.u16(outF16, n * d);
          const got = Float64Array.from(h, (v) => fromF16(v) * 2 ** -e);
          assertClose(`${tag}: out`, got, ref, 1e-3, 1e-6);
          // on the CPU: mb_add_norm's fp32 rows, scaled and rounded (bit for bit)
          for (let i = 0; i < n * d; i++) {
            assert.ok(Object.is(fromF16(h[i]), roundF16(ref[i] * 2 ** e)), `${tag}: element ${i}`);
          }
          // expGiven: the exponent in outExp is read (one below the bound's), not found again
          if (!accumulate && !alias) {
            const given = m.put(new Int32Array([e - 1])), h2 = m.zeros(n * d * 2);
            be.addNormF16({
              ...common,
              x: m.put(x),
              residual: m.put(res),
              outF16: h2,
              outExp: given,
              expGiven: true,
            });
            assert.equal(m.i32(given, 1)[0], e - 1, `${tag}: given e kept`);
            const g = m.u16(h2, n * d);
            for (let i = 0; i < n * d; i++) {
              assert.ok(
                Object.is(fromF16(g[i]), roundF16(ref[i] * 2 ** (e - 1))),
                `${tag}: given e, element ${i}`,
              );
            }
          }
        });
      }
    }
  }
}

Deno.test("fp16 operands: argument validation, zero sizes, the scale's range", () => {
  withMem(VEC, (m) => {
    const x = m.zeros(4096), h = m.zeros(4096), y = m.zeros(4096);
    const ex = m.put(new Int32Array([0])), ew = m.put(new Int32Array([0]));
    const lin = { x, wF16: h, wExp: ew, n: 2, inF: 4, outF: 3, y };
    const oneOf = /mb_linear_f16: exactly one of x and x_f16/;
    assertInvalid(() => VEC.linearF16({ ...lin, xF16: h, xExp: ex }), oneOf);
    assertInvalid(() => VEC.linearF16({ ...lin, x: null }), oneOf);
    assertInvalid(
      () => VEC.linearF16({ ...lin, x: null, xF16: h }),
      /mb_linear_f16: x_exp is NULL/,
    );
    assertInvalid(() => VEC.linearF16({ ...lin, inF: 0 }), /mb_linear_f16: in_f \(0\) < 1/);
    assertInvalid(() => VEC.linearF16({ ...lin, ldx: 3 }), /ldx \(3\) < in_f \(4\)/);
    assertInvalid(() => VEC.linearF16({ ...lin, ldy: 2 }), /ldy \(2\) < out_f \(3\)/);
    assertInvalid(() => VEC.linearF16({ ...lin, wExp: null }), /mb_linear_f16: w_exp is NULL/);
    assertInvalid(() => VEC.linearF16({ ...lin, y: null }), /mb_linear_f16: y is NULL/);
    VEC.linearF16({ ...lin, n: 0, y: null }); // zero rows: nothing to do
    const an = {
      x,
      residual: y,
      accumulate: true,
      weight: x,
      bias: null,
      normKind: "rmsnorm" as const,
      eps: 1e-5,
      n: 1,
      d: 4,
      outF16: h,
      outExp: ex,
    };
    assertInvalid(
      () => VEC.addNormF16({ ...an, x: y }),
      /mb_add_norm_f16: x equals residual with accumulate set/,
    );
    assertInvalid(
      () => VEC.addNormF16({ ...an, outExp: null }),
      /mb_add_norm_f16: out_exp is NULL/,
    );
    assertInvalid(
      () => VEC.addNormF16({ ...an, outF16: null }),
      /mb_add_norm_f16: out_f16 is NULL/,
    );
    assertInvalid(() => VEC.addNormF16({ ...an, eps: -1 }), /mb_add_norm_f16: eps/);
    VEC.addNormF16({ ...an, x: y, accumulate: false }); // the sum already in the residual
    const cv = {
      x,
      ldx: 4,
      w: x,
      bias: null,
      state: null,
      batch: 1,
      len: 2,
      d: 4,
      k: 2,
      out: y,
      ldo: 4,
      outPreact: null,
    };
    assertInvalid(
      () => VEC.conv1d({ ...cv, outF16Exp: ex }),
      /mb_causal_conv1d: out16_f16_exp needs out16/,
    );
    const sc = {
      u: x,
      ldu: 4,
      delta: x,
      ldDelta: 4,
      A: x,
      B: x,
      ldb: 2,
      C: x,
      ldc: 2,
      D: null,
      z: null,
      ldz: 4,
      state: null,
      statesAll: null,
      batch: 1,
      len: 2,
      d: 4,
      n: 1,
      deltaSoftplus: true,
      y,
      ldy: 4,
    };
    assertInvalid(
      () => VEC.selectiveScan({ ...sc, uF16Exp: ex }),
      /mb_selective_scan: u_f16_exp needs u_bf16/,
    );
    assertInvalid(
      () => VEC.selectiveScan({ ...sc, deltaF16Exp: ex }),
      /mb_selective_scan: delta_f16_exp needs delta_bf16/,
    );
    assertInvalid(
      () => VEC.linearF16({ ...lin, yF16: h, yExp: ex }),
      /mb_linear_f16: y_f16 is given with y, a bias or accumulate set/,
    );
    assertInvalid(
      () => VEC.linearF16({ ...lin, y: null, yF16: h }),
      /mb_linear_f16: y_exp is NULL/,
    );
    VEC.selectiveScan({ ...sc, uBf16: true, uF16Exp: ex }); // fp16 rows of u: accepted
    const conv = { x, ldx: 4, rows: 2, cols: 4, out: h, outExp: ex };
    assertInvalid(() => VEC.toF16Scaled({ ...conv, ldx: 3 }), /mb_to_f16_scaled: ldx \(3\) < cols/);
    assertInvalid(() => VEC.toF16Scaled({ ...conv, rows: -1 }), /rows \(-1\) < 0/);
    assertInvalid(() => VEC.toF16Scaled({ ...conv, outExp: null }), /out_exp is NULL/);
    // zero sizes: nothing written, e included
    const kept = m.put(new Int32Array([77]));
    VEC.toF16Scaled({ x: null, rows: 0, cols: 4, out: null, outExp: kept });
    VEC.toF16Scaled({ x: null, rows: 3, cols: 0, out: null, outExp: kept });
    assert.equal(m.i32(kept, 1)[0], 77);
  });
  // 2^-(ex + ew) leaves fp32's range exactly where the product does: inf, or 0 (+ the bias)
  for (const [p, want] of [[2 ** 100, Infinity], [2 ** -100, 0.5]]) {
    for (const [name, be] of ALL) {
      withMem(be, (m) => {
        const v = m.put(new Float32Array(5).fill(p)), wh = toF16(be, m, v, 5, 1, 5);
        const y = m.zeros(4);
        be.linearF16({
          x: v,
          wF16: m.put(wh.h),
          wExp: m.put(new Int32Array([wh.e])),
          bias: m.put(new Float32Array([0.5])),
          n: 1,
          inF: 5,
          outF: 1,
          y,
        });
        assert.equal(m.f32(y, 1)[0], want, `linear_f16 (${name}) of 5 x ${p}^2`);
      });
    }
  }
});

/**
 * mb_selective_scan's y_f16_exp: the exponent mb_to_f16_scaled would choose for y's batch * len
 * rows of d (not their padding), and y itself bit for bit as without it. Padding columns of y hold
 * 3e38: read, they would change the exponent. The decoding form (len 1), the sequence form on
 * several threads, magnitudes far from 1, and bf16 u (widened first). Every CPU context.
 */
Deno.test("selective_scan: y_f16_exp is to_f16_scaled's exponent of y's rows, y unchanged", () => {
  const r = rng(testSeed() + 11);
  for (const [name, be] of ALL) {
    for (
      const [batch, len, d, n, uScale, uBf16] of [
        [2, 1, 37, 16, 1, false],
        [2, 33, 37, 16, 1, false],
        [2, 9, 20, 5, 2 ** 20, false],
        [2, 5, 11, 4, 2 ** -30, false],
        [2, 17, 24, 16, 1, true],
      ] as const
    ) {
      const c = scanCase(r, batch, len, d, n, { pad: 3 });
      const u = c.u.map((v) => v * uScale);
      const rows = batch * len;
      const run = (withExp: boolean) =>
        withMem(be, (m) => {
          const y = m.put(new Float32Array(rows * c.ld).fill(3e38));
          const sp = m.put(c.state!);
          const yF16Exp = withExp ? m.put(new Int32Array([12345])) : null;
          be.selectiveScan({
            u: m.put(uBf16 ? toBf16(u) : u),
            uBf16,
            ldu: c.ld,
            delta: m.put(c.delta),
            ldDelta: c.ld,
            A: m.put(c.A),
            B: m.put(c.B),
            ldb: c.ldbc,
            C: m.put(c.C),
            ldc: c.ldbc,
            D: m.put(c.D!),
            z: m.put(c.z!),
            ldz: c.ld,
            state: sp,
            statesAll: null,
            batch,
            len,
            d,
            n,
            deltaSoftplus: true,
            y,
            ldy: c.ld,
            yF16Exp,
          });
          return {
            y: m.f32(y, rows * c.ld),
            state: m.f32(sp, batch * d * n),
            e: yF16Exp ? m.i32(yF16Exp, 1)[0] : null,
            // to_f16_scaled on the same rows afterwards
            want: toF16(be, m, y, c.ld, rows, d).e,
          };
        });
      const plain = run(false), got = run(true);
      const tag = `${name} b=${batch} len=${len} d=${d} n=${n} u*${uScale} uBf16=${uBf16}`;
      assert.deepEqual(bitsOf(got.y), bitsOf(plain.y), `${tag}: y`);
      assert.deepEqual(bitsOf(got.state), bitsOf(plain.state), `${tag}: state`);
      assert.equal(got.e, got.want, `${tag}: y_f16_exp vs to_f16_scaled`);
      const rowsOnly = new Float32Array(rows * d);
      for (let i = 0; i < rows; i++) {
        rowsOnly.set(got.y.subarray(i * c.ld, i * c.ld + d), i * d);
      }
      assert.equal(got.e, scaleExp(amaxOf(rowsOnly)), `${tag}: y_f16_exp vs the rule`);
    }
  }
});

Deno.test("selective_scan: y_f16_exp needs y; zero sizes write nothing", () => {
  withMem(VEC, (m) => {
    const c = scanCase(rng(testSeed() + 12), 1, 2, 4, 3);
    const kept = m.put(new Int32Array([77]));
    const a = {
      u: m.put(c.u),
      ldu: c.ld,
      delta: m.put(c.delta),
      ldDelta: c.ld,
      A: m.put(c.A),
      B: m.put(c.B),
      ldb: c.ldbc,
      C: m.put(c.C),
      ldc: c.ldbc,
      D: null,
      z: null,
      ldz: c.ld,
      state: null,
      statesAll: null,
      batch: 1,
      len: 2,
      d: 4,
      n: 3,
      deltaSoftplus: true,
      y: m.zeros(2 * c.ld * 4),
      ldy: c.ld,
      yF16Exp: kept,
    };
    const needsY = /mb_selective_scan: y_f16_exp needs y/;
    assertInvalid(() => VEC.selectiveScan({ ...a, y: null, yBf16: m.zeros(2 * c.ld * 2) }), needsY);
    assertInvalid(() => VEC.selectiveScan({ ...a, y: null }), needsY);
    VEC.selectiveScan({ ...a, batch: 0 });
    VEC.selectiveScan({ ...a, len: 0 });
    assert.equal(m.i32(kept, 1)[0], 77, "zero sizes: y_f16_exp untouched");
    VEC.selectiveScan(a);
    assert.notEqual(m.i32(kept, 1)[0], 77, "y_f16_exp written");
  });
});

/**
 * mb_linear_f16 with fp32 x and x_exp: x scaled by 2^x_exp with no pass of its own. With
 * to_f16_scaled's exponent it gives the bits of the x_f16 form; one below (a smaller scale) stays
 * the product of the operands rounded at that scale, within fp16's error of the float64 product;
 * two above overflows fp16 at x's largest magnitude (so x_exp is not ignored). Every CPU context.
 */
Deno.test("linear_f16: fp32 x with x_exp scales by x_exp (the x_f16 form's bits at the rule's)", () => {
  const r = rng(testSeed() + 13);
  for (const [name, be] of ALL) {
    for (
      const [n, inF, outF, mag] of [[1, 5, 7, 0], [3, 33, 7, 0], [17, 33, 7, 1], [17, 64, 20, 0]]
    ) {
      withMem(be, (m) => {
        const ldx = inF + 3, ldy = outF + 2, accumulate = n !== 1;
        const xs = mag ? 2 ** 70 : 1, ws = mag ? 2 ** -80 : 1;
        const x = randArray(r, n * ldx).map((v, k) => k % ldx < inF ? v * xs : 1e30);
        const w = randArray(r, outF * inF).map((v) => v * ws);
        const bias = randArray(r, outF), y0 = randArray(r, n * ldy);
        const xp = m.put(x);
        const wh = toF16(be, m, m.put(w), inF, outF, inF), xh = toF16(be, m, xp, ldx, n, inF);
        const xhPad = new Uint16Array(n * ldx).fill(0x7e00);
        for (let i = 0; i < n; i++) xhPad.set(xh.h.subarray(i * inF, (i + 1) * inF), i * ldx);
        const common = {
          ldx,
          wF16: m.put(wh.h),
          wExp: m.put(new Int32Array([wh.e])),
          bias: m.put(bias),
          n,
          inF,
          outF,
          ldy,
          accumulate,
        };
        const withExp = (e: number) => {
          const y = m.put(y0);
          be.linearF16({ ...common, x: xp, xExp: m.put(new Int32Array([e])), y });
          return m.f32(y, n * ldy);
        };
        const yH = m.put(y0);
        be.linearF16({ ...common, xF16: m.put(xhPad), xExp: m.put(new Int32Array([xh.e])), y: yH });
        const tag = `linear_f16 (${name}) n=${n} in=${inF} out=${outF} mag=${mag}`;
        assert.deepEqual(bitsOf(withExp(xh.e)), bitsOf(m.f32(yH, n * ldy)), `${tag}: x_exp = e`);
        // one below the rule: the operands rounded at 2^(e-1)
        const e = xh.e - 1, got = withExp(e);
        const { expR, scaleR, expF, scaleF } = f16ProductRefs({
          n,
          inF,
          outF,
          ldx,
          ldy,
          x,
          w,
          wh: wh.h,
          xr: (i, k) => roundF16(x[i * ldx + k] * 2 ** e),
          s: 2 ** -(e + wh.e),
          bias,
          y0,
          accumulate,
        });
        assertClose(`${tag}: x_exp = e - 1 (rounded operands)`, got, expR, 1e-5, 1e-12, scaleR);
        assertClose(`${tag}: x_exp = e - 1 (fp32 operands)`, got, expF, 2e-3, 1e-12, scaleF);
        // two above: x's largest magnitude scaled past 65520 rounds to inf
        const over = withExp(xh.e + 2);
        assert.ok(over.some((v) => !Number.isFinite(v)), `${tag}: x_exp = e + 2 overflows`);
      });
    }
  }
});

// ---- registration --------------------------------------------------------------------------

const CHECKS: [string, (be: Backend, seed: number) => void][] = [
  ["embedding", checkEmbedding],
  ["add_norm", checkAddNorm],
  ["linear", checkLinear],
  ["to_f16_scaled", checkToF16Scaled],
  ["linear_f16", checkLinearF16],
  ["add_norm_f16", checkAddNormF16],
  ["causal_conv1d", checkConv],
  ["selective_scan", checkScan],
  ["selective_state_update_dt", checkStateUpdateDt],
  ["linear_conv1d_step", checkLinearConv1dStep],
  ["conv1d_step_linear", checkConv1dStepLinear],
  ["linear_bf16_conv1d_step_linear", checkLinearBf16Conv1dStepLinear],
  ["log_softmax + logprob_rank", checkLogSoftmax],
  ["sample", checkSample],
  ["read_probe", checkReadProbe],
  ["spec_commit", checkSpecCommit],
];

const SEED = testSeed();

for (const [name, check] of CHECKS) {
  for (const [label, be] of ALL) {
    Deno.test(`${name} (${label}) matches the float64 reference [seed ${SEED}]`, () => {
      check(be, SEED);
    });
  }
}

Deno.test("vector kernels equal the scalar kernels on the same inputs", () => {
  const r = rng(SEED + 1);
  // linear (skinny and GEMM sizes, both dtypes), scan, conv, add_norm, log_softmax
  const run = (be: Backend, f: (m: Mem) => Float32Array) => withMem(be, f);
  // [name, run, tolerance, scale (default: |expected| + 1, values are O(1))]
  const cases: [string, (be: Backend) => Float32Array, number, Float64Array?][] = [];
  for (const wdtype of ["f32", "bf16"] as const) {
    for (const [n, inF, outF] of [[1, 1000, 77], [4, 77, 50], [40, 256, 96]]) {
      const x = randArray(r, n * inF), w = randArray(r, outF * inF), b = randArray(r, outF);
      const wdata = wdtype === "f32" ? w : toBf16(w);
      const wref = wdtype === "f32" ? w : fromBf16(wdata as Uint16Array);
      // dot products cancel: the tolerance is relative to sum |x w| + |b|
      const scale = new Float64Array(n * outF);
      for (let i = 0; i < n; i++) {
        for (let o = 0; o < outF; o++) {
          let a = Math.abs(b[o]);
          for (let k = 0; k < inF; k++) a += Math.abs(x[i * inF + k] * wref[o * inF + k]);
          scale[i * outF + o] = a;
        }
      }
      cases.push([
        `linear ${wdtype} n=${n}`,
        (be) =>
          run(be, (m) => {
            const y = m.zeros(n * outF * 4);
            be.linear({ x: m.put(x), w: m.put(wdata), wdtype, bias: m.put(b), n, inF, outF, y });
            return m.f32(y, n * outF);
          }),
        1e-5,
        scale,
      ]);
    }
  }
  // a scan, then decoding steps whose states are whole 8 x 8 blocks plus a remainder (n = 12),
  // and steps of two sequences whose last block of 8 channels is partial (the 8-lane build's
  // step form takes a sequence's whole blocks, the block kernel the rest)
  for (
    const [batch, len, d, n] of [[2, 33, 37, 16], [3, 1, 37, 12], [1, 1, 2048, 16], [2, 1, 37, 16]]
  ) {
    const sc = scanCase(r, batch, len, d, n, { pad: 1 });
    cases.push([`selective_scan ${batch}x${len}x${d}x${n}`, (be) => {
      const o = runScan(be, sc, true);
      return Float32Array.from([...o.y, ...o.state!, ...o.all!]);
    }, 2e-5]);
  }
  const cc = convCase(r, 2, 33, 37, 4, 1, true);
  cases.push(["causal_conv1d", (be) => {
    const o = runConv(be, cc, true);
    return Float32Array.from([...o.out, ...o.pre!, ...o.state!]);
  }, 1e-5]);
  const nx = randArray(r, 3 * 1000), nw = randArray(r, 1000);
  cases.push(["add_norm", (be) =>
    run(be, (m) => {
      const res = m.put(nx), out = m.zeros(3 * 1000 * 4);
      be.addNorm({
        x: m.put(nx),
        residual: res,
        accumulate: true,
        weight: m.put(nw),
        bias: null,
        normKind: "layernorm",
        eps: 1e-5,
        n: 3,
        d: 1000,
        out,
      });
      return m.f32(out, 3000);
    }), 2e-5]);
  const lg = randArray(r, 3 * 256, -10, 10);
  cases.push(["log_softmax", (be) =>
    run(be, (m) => {
      const out = m.zeros(lg.byteLength);
      be.logSoftmax({ logits: m.put(lg), n: 3, v: 256, out });
      return m.f32(out, lg.length);
    }), 1e-5]);
  for (const [name, f, tol, scale] of cases) {
    const a = f(VEC), b = f(SCALAR);
    const s = scale ?? Float64Array.from(b, (v) => Math.abs(v) + 1);
    assertClose(`${name}: vector vs scalar`, a, b, tol, 0, s);
  }
});

Deno.test("fused decoding ops give the bits of the unfused pair (dt_proj + state update)", () => {
  const r = rng(SEED + 2);
  for (
    const [batch, d, n, R, wdtype] of [
      [1, 2048, 16, 64, "bf16"],
      [3, 600, 16, 40, "f32"],
      [2, 37, 16, 8, "bf16"],
      [1, 1100, 13, 70, "f32"],
    ] as const
  ) {
    withMem(VEC, (m) => {
      const ldx = R + 2 * n, ldz = 2 * d;
      const u = m.put(randArray(r, batch * d, -2, 2)), x = m.put(randArray(r, batch * ldx));
      const z = m.put(randArray(r, batch * ldz, -3, 3)), Dk = m.put(randArray(r, d));
      const w32 = randArray(r, d * R, -0.5, 0.5);
      const w = m.put(wdtype === "f32" ? w32 : toBf16(w32));
      const bias = m.put(randArray(r, d, -4, -1));
      const Ah = new Float32Array(d * n).map((_, i) => -(1 + (i % n)));
      const A = m.put(Ah);
      const s0 = randArray(r, batch * d * n);
      const common = {
        u,
        ldu: d,
        A,
        B: offsetPtr(x, R * 4),
        ldb: ldx,
        C: offsetPtr(x, (R + n) * 4),
        ldc: ldx,
        D: Dk,
        z,
        ldz,
        batch,
        d,
        n,
        deltaSoftplus: true,
      };
      // fused
      const sf = m.put(s0), yf = m.zeros(batch * d * 4), df = m.zeros(batch * d * 4);
      VEC.stateUpdateDt({
        ...common,
        xDbl: x,
        ldXDbl: ldx,
        dtW: w,
        wdtype,
        dtBias: bias,
        dtRank: R,
        state: sf,
        deltaOut: df,
        y: yf,
        ldy: d,
      });
      // unfused: linear then the one-step scan
      const su = m.put(s0), yu = m.zeros(batch * d * 4), du = m.zeros(batch * d * 4);
      VEC.linear({ x, ldx, w, wdtype, bias, n: batch, inF: R, outF: d, y: du });
      VEC.selectiveScan({
        ...common,
        ldDelta: d,
        delta: du,
        state: su,
        statesAll: null,
        len: 1,
        y: yu,
        ldy: d,
      });
      const tag = `b=${batch} d=${d} n=${n} R=${R} ${wdtype}`;
      assert.deepEqual(m.f32(df, batch * d), m.f32(du, batch * d), `${tag}: delta`);
      assert.deepEqual(m.f32(yf, batch * d), m.f32(yu, batch * d), `${tag}: y`);
      assert.deepEqual(m.f32(sf, batch * d * n), m.f32(su, batch * d * n), `${tag}: state`);
    });
  }
});

Deno.test("fused decoding ops give the bits of the unfused pair (in_proj + conv step)", () => {
  const r = rng(SEED + 3);
  for (
    const [n, inF, outF, dc, k, wdtype] of [
      [1, 1024, 4096, 2048, 4, "bf16"],
      [3, 160, 330, 165, 4, "f32"],
      [2, 64, 96, 37, 3, "bf16"],
      [1, 200, 600, 300, 2, "f32"],
    ] as const
  ) {
    withMem(VEC, (m) => {
      const x = m.put(randArray(r, n * inF)), w32 = randArray(r, outF * inF, -0.3, 0.3);
      const w = m.put(wdtype === "f32" ? w32 : toBf16(w32)), bias = m.put(randArray(r, outF));
      const cw = m.put(randArray(r, dc * k)), cb = m.put(randArray(r, dc));
      const st0 = randArray(r, n * dc * (k - 1));
      const lin = { x, w, wdtype, bias, n, inF, outF };
      const sf = m.put(st0), yf = m.zeros(n * outF * 4), xf = m.zeros(n * dc * 4);
      VEC.linearConv1dStep({
        ...lin,
        y: yf,
        convW: cw,
        convBias: cb,
        convState: sf,
        dConv: dc,
        k,
        xc: xf,
      });
      const su = m.put(st0), yu = m.zeros(n * outF * 4), xu = m.zeros(n * dc * 4);
      VEC.linear({ ...lin, y: yu });
      VEC.conv1d({
        x: yu,
        ldx: outF,
        w: cw,
        bias: cb,
        state: su,
        batch: n,
        len: 1,
        d: dc,
        k,
        out: xu,
        ldo: dc,
        outPreact: null,
      });
      const tag = `n=${n} ${inF}->${outF} dConv=${dc} k=${k} ${wdtype}`;
      assert.deepEqual(m.f32(yf, n * outF), m.f32(yu, n * outF), `${tag}: y`);
      assert.deepEqual(m.f32(xf, n * dc), m.f32(xu, n * dc), `${tag}: conv out`);
      assert.deepEqual(m.f32(sf, n * dc * (k - 1)), m.f32(su, n * dc * (k - 1)), `${tag}: state`);
    });
  }
});

Deno.test("FLAG_UNFUSED_STEPS: the fused ops run as their plain pair (same results)", () => {
  const r = rng(SEED + 4);
  const [batch, d, n, R, inF, k] = [2, 40, 16, 8, 24, 4];
  const ldx = R + 2 * n;
  const inputs = {
    x: randArray(r, batch * inF),
    w: randArray(r, 2 * d * inF, -0.3, 0.3),
    cw: randArray(r, d * k),
    cs: randArray(r, batch * d * (k - 1)),
    xDbl: randArray(r, batch * ldx),
    dtW: randArray(r, d * R, -0.5, 0.5),
    dtBias: randArray(r, d, -4, -1),
    A: new Float32Array(d * n).map((_, i) => -(1 + (i % n))),
    s: randArray(r, batch * d * n),
  };
  // One decoding layer's two fused ops; returns every output.
  const run = (flags: number) => {
    VEC.setFlags(flags);
    try {
      return withMem(VEC, (m) => {
        const xz = m.zeros(batch * 2 * d * 4), xc = m.zeros(batch * d * 4);
        const cs = m.put(inputs.cs), xDbl = m.put(inputs.xDbl), s = m.put(inputs.s);
        const delta = m.zeros(batch * d * 4), y = m.zeros(batch * d * 4);
        VEC.linearConv1dStep({
          x: m.put(inputs.x),
          w: m.put(inputs.w),
          wdtype: "f32",
          bias: null,
          n: batch,
          inF,
          outF: 2 * d,
          y: xz,
          convW: m.put(inputs.cw),
          convBias: null,
          convState: cs,
          dConv: d,
          k,
          xc,
        });
        const step = {
          u: xc,
          ldu: d,
          xDbl,
          ldXDbl: ldx,
          dtW: m.put(inputs.dtW),
          wdtype: "f32" as const,
          dtBias: m.put(inputs.dtBias),
          dtRank: R,
          A: m.put(inputs.A),
          B: offsetPtr(xDbl, R * 4),
          ldb: ldx,
          C: offsetPtr(xDbl, (R + n) * 4),
          ldc: ldx,
          D: null,
          z: offsetPtr(xz, d * 4),
          ldz: 2 * d,
          state: s,
          batch,
          d,
          n,
          deltaSoftplus: true,
          y,
          ldy: d,
        };
        VEC.stateUpdateDt({ ...step, deltaOut: delta });
        if (flags & FLAG_UNFUSED_STEPS) {
          // the plain pair keeps delta in deltaOut, so it is required
          assertInvalid(() => VEC.stateUpdateDt({ ...step, deltaOut: null }), /delta_out is NULL/);
        }
        const sizes = [2 * d, d, d * (k - 1), d, d, d * n].map((x) => batch * x);
        return [xz, xc, cs, delta, y, s].map((p, i) => m.f32(p, sizes[i]));
      });
    } finally {
      VEC.setFlags(0);
    }
  };
  const fused = run(0), plain = run(FLAG_UNFUSED_STEPS);
  const names = ["xz", "conv out", "conv state", "delta", "y", "ssm state"];
  for (let i = 0; i < names.length; i++) assert.deepEqual(plain[i], fused[i], names[i]);
});

Deno.test("MAMBABYTE_CUDA_FUSED=0 asks CUDA contexts for FLAG_UNFUSED_STEPS", () => {
  const old = Deno.env.get("MAMBABYTE_CUDA_FUSED");
  try {
    Deno.env.set("MAMBABYTE_CUDA_FUSED", "0");
    assert.equal(envFlags("cuda"), FLAG_UNFUSED_STEPS);
    assert.equal(envFlags("cpu"), 0); // the CPU's fused ops are its unfused bits
    Deno.env.set("MAMBABYTE_CUDA_FUSED", "1");
    assert.equal(envFlags("cuda"), 0);
    assert.equal(VEC.flags, 0);
  } finally {
    if (old === undefined) Deno.env.delete("MAMBABYTE_CUDA_FUSED");
    else Deno.env.set("MAMBABYTE_CUDA_FUSED", old);
  }
});
