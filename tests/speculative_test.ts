/**
 * Speculative decoding on the CPU: the pieces verification relies on hold bit for bit (a product's
 * rows do not depend on the rows beside them; mb_selective_scan_dt's positions equal decoding
 * steps; a verification pass's logits equal stepping's, and resuming from any verified position
 * gives the stepped state), and speculative generation returns exactly the bytes of plain
 * generation, greedy and sampled, with the bundled models and random ones, on every CPU context.
 */
import assert from "node:assert/strict";
import { loadModel, type MambaByteLM } from "../mod.ts";
import { type Backend, FLAG_UNFUSED_STEPS, type Ptr } from "../src/backend/backend.ts";
import { Tensor } from "../src/backend/tensor.ts";
import { ModelDrafter } from "../src/generate/drafter.ts";
import { generateSpeculative } from "../src/generate/speculative.ts";
import { MambaByteError } from "../src/errors.ts";
import { mulberry32, testSeed } from "./helpers/compare.ts";
import { cpuContext, withEnv } from "./helpers/cpu_contexts.ts";
import { forkStates, stepByte, verifyRows, withVerifyWorkspaces } from "./helpers/verify_pass.ts";

const CONFIG = new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname;
const SEED = testSeed();

function rand(r: () => number, n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * scale;
  return a;
}

function toBf16(a: Float32Array): Uint16Array {
  const f = new Float32Array(1), u = new Uint32Array(f.buffer);
  const out = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) {
    f[0] = a[i];
    out[i] = ((u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return out;
}

/** Bitwise equality of two float arrays (NaN payloads and signed zeros included). */
function assertSameBits(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < ua.length; i++) {
    if (ua[i] !== ub[i]) assert.fail(`${what}: element ${i} differs (${a[i]} vs ${b[i]})`);
  }
}

const CONTEXTS: [string, () => Backend][] = [
  ["vector", () => cpuContext("vector")],
  ["scalar", () => cpuContext("scalar")],
  ["noblas", () => cpuContext("noblas")],
];

for (const [label, make] of CONTEXTS) {
  // bf16 weights up to 32 rows (batch decoding): the library's own tiles, not BLAS (linear.c;
  // x rows 12 at a time packed, in chunks of their inputs past 512, the rest by the n <= 8 kernels)
  Deno.test(`linear: each row of an n <= 8 call (bf16: n <= 32) has the bits of a one-row call (${label}) [seed ${SEED}]`, () => {
    const be = make();
    const r = mulberry32(SEED);
    try {
      const shapes = [[64, 48], [37, 19], [448, 896], [200, 256], [28, 896], [520, 24], [601, 20]];
      for (const [inF, outF] of shapes) {
        for (const wdtype of ["f32", "bf16"] as const) {
          const wf = rand(r, outF * inF, 0.2);
          const w = wdtype === "f32"
            ? Tensor.fromHost(be, wf, [outF, inF])
            : Tensor.fromHost(be, toBf16(wf), [outF, inF], "bf16");
          const bias = Tensor.fromHost(be, rand(r, outF), [outF]);
          const x = Tensor.fromHost(be, rand(r, 32 * inF), [32, inF]);
          const y = Tensor.zeros(be, "f32", [32, outF]);
          const y1 = Tensor.zeros(be, "f32", [outF]);
          const ns = wdtype === "f32"
            ? [2, 3, 4, 5, 6, 7, 8]
            : [2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 21, 29, 32];
          try {
            for (const n of ns) {
              be.linear({ x: x.ptr, w: w.ptr, wdtype, bias: bias.ptr, n, inF, outF, y: y.ptr });
              const all = y.toHost() as Float32Array;
              for (let i = 0; i < n; i++) {
                be.linear({
                  x: x.at(i * inF),
                  w: w.ptr,
                  wdtype,
                  bias: bias.ptr,
                  n: 1,
                  inF,
                  outF,
                  y: y1.ptr,
                });
                assertSameBits(
                  all.subarray(i * outF, (i + 1) * outF),
                  y1.toHost() as Float32Array,
                  `${wdtype} ${inF}x${outF} n=${n} row ${i}`,
                );
              }
            }
          } finally {
            for (const t of [w, bias, x, y, y1]) t.free();
          }
        }
      }
    } finally {
      be.close();
    }
  });

  Deno.test(`selective_scan_dt: every position equals a decoding step (${label}) [seed ${SEED}]`, () => {
    const be = make();
    const r = mulberry32(SEED + 1);
    try {
      for (const unfused of [false, true]) {
        be.setFlags(unfused ? FLAG_UNFUSED_STEPS : 0);
        for (
          const [d, n, R, len, wdtype] of [
            [40, 16, 5, 9, "f32"],
            [64, 16, 8, 4, "bf16"],
            [24, 7, 3, 3, "f32"],
            [16, 20, 4, 5, "bf16"],
            [27, 8, 3, 4, "f32"], // one vector of states a channel, a partial block of channels
          ] as const
        ) {
          const cols = R + 2 * n;
          const xDbl = rand(r, len * cols);
          const u = rand(r, len * d), z = rand(r, len * d);
          const A = rand(r, d * n).map((v) => -Math.exp(v));
          const D = rand(r, d), dtB = rand(r, d), dtWf = rand(r, d * R, 0.5);
          const h0 = rand(r, d * n);
          const T = (a: Float32Array) => Tensor.fromHost(be, a, [a.length]);
          const dtW = wdtype === "f32"
            ? T(dtWf)
            : Tensor.fromHost(be, toBf16(dtWf), [dtWf.length], "bf16");
          const bufs = [T(xDbl), T(u), T(z), T(A), T(D), T(dtB), dtW];
          const [tx, tu, tz, tA, tD, tb] = bufs;
          const stateA = T(h0), stateB = T(h0);
          const all = Tensor.zeros(be, "f32", [len * d * n]);
          const yA = Tensor.zeros(be, "f32", [len * d]), yB = Tensor.zeros(be, "f32", [len * d]);
          const dA = Tensor.zeros(be, "f32", [len * d]), dB = Tensor.zeros(be, "f32", [len * d]);
          const at = (t: Tensor, i: number): Ptr => t.at(i);
          try {
            const common = {
              ldu: d,
              ldXDbl: cols,
              dtW: dtW.ptr,
              wdtype,
              dtBias: tb.ptr,
              dtRank: R,
              A: tA.ptr,
              ldb: cols,
              ldc: cols,
              D: tD.ptr,
              ldz: d,
              d,
              n,
              deltaSoftplus: true,
              ldy: d,
            };
            be.scanDt({
              ...common,
              u: tu.ptr,
              xDbl: tx.ptr,
              B: tx.at(R),
              C: tx.at(R + n),
              z: tz.ptr,
              state: stateA.ptr,
              statesAll: all.ptr,
              batch: 1,
              len,
              deltaOut: dA.ptr,
              y: yA.ptr,
            });
            const states = all.toHost() as Float32Array;
            for (let t = 0; t < len; t++) {
              be.stateUpdateDt({
                ...common,
                u: at(tu, t * d),
                xDbl: at(tx, t * cols),
                B: at(tx, t * cols + R),
                C: at(tx, t * cols + R + n),
                z: at(tz, t * d),
                state: stateB.ptr,
                batch: 1,
                deltaOut: at(dB, t * d),
                y: at(yB, t * d),
              });
              assertSameBits(
                states.subarray(t * d * n, (t + 1) * d * n),
                stateB.toHost() as Float32Array,
                `states_all[${t}] d=${d} n=${n} ${wdtype} unfused=${unfused}`,
              );
            }
            assertSameBits(yA.toHost() as Float32Array, yB.toHost() as Float32Array, "y");
            assertSameBits(dA.toHost() as Float32Array, dB.toHost() as Float32Array, "delta");
            assertSameBits(
              stateA.toHost() as Float32Array,
              stateB.toHost() as Float32Array,
              "final state",
            );
          } finally {
            for (const t of [...bufs, stateA, stateB, all, yA, yB, dA, dB]) t.free();
          }
        }
      }
    } finally {
      be.close();
    }
  });
}

function loadCpu(
  modelId: string,
  opts: { seed?: number; dtype?: "fp32" | "bf16"; checkpoint?: null } = {},
): Promise<MambaByteLM> {
  return loadModel({ configPath: CONFIG, modelId, device: "cpu", ...opts });
}

Deno.test("a verification pass equals stepping, and resumes at any position with the stepped state", async () => {
  for (
    const [id, dtype] of [["test-64x3", "fp32"], ["test-64x3", "bf16"], ["tiny", "fp32"]] as const
  ) {
    const model = await loadCpu(id, { seed: 11, dtype });
    const text = new TextEncoder().encode("To be, or not to be: that is the question.");
    const M = 10; // two row blocks
    const prefix = text.subarray(0, 7);
    await withVerifyWorkspaces(model, M, async ({ ws, ws1, saved }) => {
      for (const pos of [0, 1, 2, 5, M - 1]) {
        const { stepped, verified } = await forkStates(model, prefix);
        const rows = text.subarray(7, 7 + M);
        verifyRows(model, ws, verified, rows, saved);
        const logits = ws.logits.toHost() as Float32Array;
        let at: { conv: Float32Array[]; ssm: Float32Array[] } | undefined;
        for (let t = 0; t < M; t++) {
          stepByte(model, ws1, stepped, rows[t]);
          assertSameBits(
            logits.subarray(t * 256, (t + 1) * 256),
            ws1.logits.toHost() as Float32Array,
            `${id} ${dtype} logits ${t}`,
          );
          if (t === pos) {
            at = {
              conv: stepped.conv.map((c) => c.toHost() as Float32Array),
              ssm: stepped.ssm.map((c) => c.toHost() as Float32Array),
            };
          }
        }
        model.resumeAt(verified, saved, pos);
        const accepted = new Int32Array(1);
        model.backend.download(accepted, saved.control.at(saved.accepted));
        assert.equal(accepted[0], pos, `${id}: the accepted count`);
        for (let i = 0; i < model.dims.nLayer; i++) {
          assertSameBits(
            verified.conv[i].toHost() as Float32Array,
            at!.conv[i],
            `${id} conv ${i} at ${pos}`,
          );
          assertSameBits(
            verified.ssm[i].toHost() as Float32Array,
            at!.ssm[i],
            `${id} ssm ${i} at ${pos}`,
          );
        }
        stepped.free();
        verified.free();
      }
    });
  }
});

const PROMPT = new TextEncoder().encode("KING RICHARD III:\nNow is the winter of our discontent\n");
const SAMPLINGS = [
  { topK: 1 },
  { topK: 256, topP: 0.98, temperature: 1.0 },
  { topK: 40, topP: 0.9, temperature: 0.7 },
  { topK: 0, topP: 0, temperature: 1.3 },
];

async function checkSame(
  target: MambaByteLM,
  drafter: MambaByteLM,
  label: string,
  opts: {
    maxNewTokens: number;
    draftLength: number;
    prompt?: Uint8Array;
    samplings?: typeof SAMPLINGS;
  },
): Promise<{ rounds: number; accepted: number }> {
  let rounds = 0, accepted = 0;
  for (const s of opts.samplings ?? SAMPLINGS) {
    const o = { maxNewTokens: opts.maxNewTokens, seed: SEED, ...s };
    const prompt = opts.prompt ?? PROMPT;
    const [plain] = await target.generate(prompt, o);
    // Rounds through the host (propose, verify, accept), then on the device (one graph a round
    // on CUDA; here the same ops run directly).
    for (const deviceRounds of [false, true]) {
      const d = new ModelDrafter(drafter);
      const streamed: number[] = [];
      const what = `${label} ${JSON.stringify(s)} k=${opts.draftLength} device=${deviceRounds}`;
      try {
        const { bytes, stats } = await generateSpeculative(target, prompt, d, {
          ...o,
          draftLength: opts.draftLength,
          deviceRounds,
          onBytes: (b, step) => {
            assert.equal(step, streamed.length);
            streamed.push(b[0]);
          },
        });
        assert.deepEqual(bytes, plain, what);
        assert.deepEqual(Uint8Array.from(streamed), plain, `${what}: streamed bytes`);
        assert.equal(stats.bytes, opts.maxNewTokens);
        assert.ok(stats.accepted <= stats.drafted, what);
        if (opts.maxNewTokens > 1) {
          assert.ok(stats.rounds >= 1, what);
          assert.equal(stats.onDevice, deviceRounds, what);
        }
        if (deviceRounds) {
          // Every round drafts k and settles its accepted drafts plus one byte; the last may
          // settle more than was asked for.
          assert.equal(stats.drafted, stats.rounds * opts.draftLength, what);
          const settled = stats.accepted + stats.rounds;
          assert.ok(
            settled >= opts.maxNewTokens - 1 && settled < opts.maxNewTokens + opts.draftLength,
            `${what}: ${JSON.stringify(stats)}`,
          );
        } else {
          rounds += stats.rounds;
          accepted += stats.accepted;
        }
      } finally {
        d.free();
      }
    }
  }
  return { rounds, accepted };
}

Deno.test("a byte drafter resumes after any accepted prefix as if it had read the text from the start", async () => {
  const tiny = await loadCpu("tiny");
  const resumed = new ModelDrafter(tiny);
  try {
    const context = PROMPT.slice();
    await resumed.start(context);
    let text = context;
    // The verifier's answers: a mismatch at the first byte, in the middle, at the last drafted
    // byte, and every draft kept plus the byte after them.
    for (const kept of [0, 3, 6, 7, 2, 7]) {
      const p = await resumed.propose(7);
      assert.equal(p.length, 7);
      const next = kept < 7 ? (p[kept] + 1) % 256 : 0x20;
      const accepted = Uint8Array.from([...p.subarray(0, kept), next]);
      await resumed.accept(accepted);
      text = Uint8Array.from([...text, ...accepted]);
      const fresh = new ModelDrafter(tiny);
      try {
        await fresh.start(text);
        assert.deepEqual(await resumed.propose(7), await fresh.propose(7), `after keeping ${kept}`);
        // propose() again from the same state: both drafters are where the loop expects them.
        await resumed.accept(Uint8Array.of(0x65));
        await fresh.accept(Uint8Array.of(0x65));
        text = Uint8Array.from([...text, 0x65]);
      } finally {
        fresh.free();
      }
    }
  } finally {
    resumed.free();
    tiny.close();
  }
});

Deno.test("speculative generation returns plain generation's bytes: tiny drafting for small (fp32, bf16)", async () => {
  for (const dtype of ["fp32", "bf16"] as const) {
    const small = await loadCpu("small", { dtype });
    const tiny = await loadCpu("tiny", { dtype });
    try {
      const r = await checkSame(small, tiny, `small<-tiny ${dtype}`, {
        maxNewTokens: 100,
        draftLength: dtype === "fp32" ? 7 : 3,
        samplings: dtype === "fp32" ? SAMPLINGS : SAMPLINGS.slice(0, 2),
      });
      assert.ok(r.accepted > 0, "the drafter is accepted sometimes");
    } finally {
      small.close();
      tiny.close();
    }
  }
});

Deno.test("speculative generation: the target drafting for itself (every draft accepted greedily), long drafts, edge lengths", async () => {
  const tiny = await loadCpu("tiny");
  const copy = await loadCpu("tiny");
  try {
    for (const k of [1, 9, 16]) {
      const r = await checkSame(tiny, copy, "tiny<-tiny", {
        maxNewTokens: 120,
        draftLength: k,
        samplings: [{ topK: 1 }],
      });
      // Every pass settles accepted + 1 bytes of the 119 after the first.
      assert.ok(r.accepted + r.rounds >= 119 && r.accepted + r.rounds <= 119 + k);
      assert.ok(r.accepted >= 0.9 * (r.rounds - 1) * k, `greedy self-drafts are accepted (k=${k})`);
    }
    for (const n of [1, 2, 3, 9]) {
      await checkSame(tiny, copy, `tiny<-tiny N=${n}`, { maxNewTokens: n, draftLength: 7 });
    }
    await checkSame(tiny, copy, "unconditional", {
      maxNewTokens: 40,
      draftLength: 5,
      prompt: new Uint8Array(0),
    });
  } finally {
    tiny.close();
    copy.close();
  }
});

Deno.test("speculative generation on random models, every CPU context", async () => {
  for (
    const env of [[], ["MAMBABYTE_CPU_SCALAR", "1"], ["MAMBABYTE_CPU_NOBLAS", "1"]] as string[][]
  ) {
    const load = (id: string, seed: number) =>
      env.length
        ? withEnv(env[0], env[1], () => loadCpu(id, { seed, checkpoint: null }))
        : loadCpu(id, { seed, checkpoint: null });
    const target = await load("test-64x3", 3);
    const drafter = await load("test-48x2", 4);
    try {
      await checkSame(target, drafter, `random ${env.join("=") || "vector"}`, {
        maxNewTokens: 60,
        draftLength: 4,
      });
    } finally {
      target.close();
      drafter.close();
    }
  }
});

Deno.test("speculative generation refuses what it cannot do", async () => {
  const tiny = await loadCpu("tiny");
  const d = new ModelDrafter(tiny);
  try {
    await assert.rejects(
      generateSpeculative(tiny, PROMPT, d, { numSamples: 2 }),
      MambaByteError,
    );
    await assert.rejects(
      generateSpeculative(tiny, PROMPT, d, { draftLength: 0 }),
      /draft length/,
    );
    await assert.rejects(
      generateSpeculative(tiny, PROMPT, d, { draftLength: 65 }),
      /draft length/,
    );
    for (const roundsAhead of [0, NaN, 1.5]) {
      await assert.rejects(
        generateSpeculative(tiny, PROMPT, d, { deviceRounds: true, roundsAhead }),
        /roundsAhead must be an integer/,
      );
    }
  } finally {
    d.free();
    tiny.close();
  }
});

Deno.test("MambaByteLM.generate with a draft model (the API) equals plain generation and reports stats", async () => {
  const { loadDraftModel } = await import("../mod.ts");
  const small = await loadCpu("small");
  const draft = await loadDraftModel({ configPath: CONFIG, modelId: "tiny", device: "cpu" });
  try {
    assert.equal(draft.kind, "bytes");
    const o = { maxNewTokens: 64, seed: 5, topK: 20, temperature: 0.9 };
    const [plain] = await small.generate(PROMPT, o);
    let stats: import("../mod.ts").SpeculativeStats | undefined;
    const [spec] = await small.generate(PROMPT, {
      ...o,
      draft: { model: draft, length: 4, onStats: (s) => stats = s },
    });
    assert.deepEqual(spec, plain);
    assert.equal(stats?.draftLength, 4);
    assert.equal(stats?.bytes, 64);
    assert.equal(stats?.phaseSeconds, null);
    // Timed phases (bench:spec --profile): the same bytes, three non-negative phases that fit in
    // the generation's time.
    let prof: import("../mod.ts").SpeculativeStats | undefined;
    const [profiled] = await small.generate(PROMPT, {
      ...o,
      draft: { model: draft, length: 4, profilePhases: true, onStats: (s) => prof = s },
    });
    assert.deepEqual(profiled, plain);
    const p = prof!.phaseSeconds!;
    for (const v of [p.draft, p.verify, p.resume]) assert.ok(v >= 0 && Number.isFinite(v));
    assert.ok(p.draft > 0 && p.verify > 0, JSON.stringify(p));
    assert.ok(p.draft + p.verify + p.resume <= prof!.seconds + 1e-3, JSON.stringify(prof));
  } finally {
    draft.close();
    small.close();
  }
});
