/**
 * Long inputs: a 256 KiB prompt runs chunk by chunk with the state carried, in memory that does not
 * grow with its length (the workspace holds one chunk), and the final state does not depend on
 * the chunk length.
 */
import assert from "node:assert/strict";
import { loadModel } from "../mod.ts";
import type { MambaByteLM } from "../src/model/model.ts";
import { maxRelError } from "./helpers/compare.ts";

const CONFIG = new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname;
const MIB = 1 << 20;
// 256 KiB here (the CPU tests stay quick); bench:gpu times a 1 MiB prompt (case fwd1m-bf16).
const LEN = 256 << 10;

/** A 256 KiB text that is not periodic at any chunk length. */
function text(): Uint8Array {
  let x = 4740;
  return Uint8Array.from({ length: LEN }, () => {
    x = (x * 1664525 + 1013904223) >>> 0;
    return 32 + (x >>> 24) % 95;
  });
}

/** The final state (every layer's SSM state and conv window) and the chunks' sizes. */
async function run(model: MambaByteLM, bytes: Uint8Array) {
  let rowsMax = 0, chunks = 0, done = 0;
  const st = await model.forwardChunks(bytes, {
    skipHead: true,
    onProgress: (d) => {
      rowsMax = Math.max(rowsMax, d - done);
      done = d;
      chunks++;
    },
  });
  const parts = [...st.ssm, ...st.conv].map((t) => {
    const h = new Float32Array(t.bytes / 4);
    model.backend.download(h, t.ptr);
    return h;
  });
  st.free();
  const state = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) state.set(p, (o += p.length) - p.length);
  return { state, rowsMax, chunks };
}

Deno.test("a 256 KiB prompt: chunks of bounded size, the state carried, the same result at two chunk lengths", async () => {
  const bytes = text();
  const load = (chunkSize: number) =>
    loadModel({ configPath: CONFIG, modelId: "test-48x2", device: "cpu", chunkSize });
  const a = await load(4096);
  const b = await load(1536);
  try {
    const before = Deno.memoryUsage().rss;
    const ra = await run(a, bytes);
    const grew = Deno.memoryUsage().rss - before;
    const rb = await run(b, bytes);
    assert.equal(ra.rowsMax, 4096);
    assert.equal(ra.chunks, LEN / 4096);
    assert.equal(rb.rowsMax, 1536);
    assert.equal(rb.chunks, Math.ceil(LEN / 1536));
    // The whole input's activations would be ~256 MiB at this width; a chunk's are a few MiB.
    assert.ok(grew < 64 * MIB, `resident memory grew by ${(grew / MIB).toFixed(0)} MiB`);
    const e = maxRelError(ra.state, rb.state);
    assert.ok(e < 1e-4, `final state: ${e}`);
  } finally {
    a.close();
    b.close();
  }
});
