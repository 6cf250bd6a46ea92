/**
 * `chunk_size: auto`: the config takes it (and it is the default), a number passes through, the
 * CPU gets 2048, and a GPU the longest chunk whose workspace fits in a quarter of its free memory,
 * with the workspace's size counted as the real Workspace allocates it.
 */
import assert from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { Backend } from "../src/backend/backend.ts";
import { ConfigError, DEFAULT_CONFIG_PATH, parseConfig } from "../src/config/config.ts";
import { completeDims } from "../src/config/dims.ts";
import { DIMS_972M } from "./helpers/shapes.ts";
import { resolveChunkSize } from "../src/model/chunk_size.ts";
import { Workspace, workspaceBytes } from "../src/model/workspace.ts";

const SMALL = completeDims({
  vocabSize: 256,
  dModel: 40,
  nLayer: 2,
  dState: 5,
  dConv: 3,
  expand: 2,
  dtRank: 7,
});

const cfg = (chunk: string) =>
  "model:\n" +
  `  common: {vocab_size: 256, d_state: 4, d_conv: 4, expand: 2${chunk}}\n` +
  "  m: {d_model: 32, n_layer: 2}\n";

Deno.test("chunk_size: auto by default and when written, numbers as before, else refused", () => {
  assert.equal(parseConfig(cfg(""), "c.yml").model("m").chunkSize, "auto");
  assert.equal(parseConfig(cfg(", chunk_size: auto"), "c.yml").model("m").chunkSize, "auto");
  assert.equal(parseConfig(cfg(", chunk_size: 512"), "c.yml").model("m").chunkSize, 512);
  for (const v of ["big", "0", "-1", "2.5", "Auto"]) {
    assert.throws(
      () => parseConfig(cfg(`, chunk_size: ${v}`), "c.yml"),
      (e: unknown) =>
        e instanceof ConfigError &&
        /'chunk_size' must be an integer .*, or auto$/.test(e.message),
      v,
    );
  }
});

Deno.test("resolveChunkSize: numbers pass, the CPU takes 2048, a GPU what fits in a quarter", () => {
  const ctx = {
    device: "cuda" as const,
    dims: DIMS_972M,
    freeBytes: 100e9,
    logitsWidth: 256,
    bf16Activations: true,
  };
  assert.equal(resolveChunkSize(300, ctx), 300);
  assert.equal(resolveChunkSize("auto", { ...ctx, device: "cpu" }), 2048);
  assert.equal(resolveChunkSize("auto", ctx), 16384);
  const at = (rows: number) => workspaceBytes(DIMS_972M, rows, 256, true);
  // 972M, bf16 activations: ~0.95 GB for 8192 positions
  assert.ok(at(8192) > 0.8e9 && at(8192) < 1.1e9, `${at(8192)}`);
  assert.equal(resolveChunkSize("auto", { ...ctx, freeBytes: 4 * at(16384) }), 16384);
  assert.equal(resolveChunkSize("auto", { ...ctx, freeBytes: 4 * at(16384) - 4 }), 8192);
  assert.equal(resolveChunkSize("auto", { ...ctx, freeBytes: 4 * at(8192) }), 8192);
  assert.equal(resolveChunkSize("auto", { ...ctx, freeBytes: 4 * at(8192) - 4 }), 4096);
  assert.equal(resolveChunkSize("auto", { ...ctx, freeBytes: 4 * at(4096) - 4 }), 2048);
  assert.equal(resolveChunkSize("auto", { ...ctx, freeBytes: 1e6 }), 2048); // the floor
  assert.equal(resolveChunkSize("auto", { ...ctx, freeBytes: 0 }), 2048); // unknown
});

Deno.test("workspaceBytes counts what a Workspace allocates", () => {
  const be = Backend.create("cpu");
  try {
    for (const [rows, width] of [[1, 256], [37, 256], [64, 1000]]) {
      const ws = new Workspace(be, SMALL, rows, width);
      try {
        const held = [
          ws.ids,
          ws.hidden,
          ws.residual,
          ws.normed,
          ws.xz,
          ws.xConv,
          ws.convPre,
          ws.xDbl,
          ws.delta,
          ws.y,
          ws.logits,
        ].reduce((s, t) => s + t.bytes, 0);
        assert.equal(workspaceBytes(SMALL, rows, width), held, `rows ${rows}`);
        assert.equal(
          workspaceBytes(SMALL, rows, width, true) - held,
          rows * 2 * (SMALL.dModel + 2 * SMALL.dInner),
        );
      } finally {
        ws.free();
      }
    }
  } finally {
    be.close();
  }
});

Deno.test("the bundled config's auto gives a CPU model 2048-position chunks", async () => {
  const lm = await loadModel({ configPath: DEFAULT_CONFIG_PATH, device: "cpu" });
  try {
    assert.equal(lm.chunkSize, 2048);
  } finally {
    lm.close();
  }
  const set = await loadModel({ configPath: DEFAULT_CONFIG_PATH, device: "cpu", chunkSize: 99 });
  try {
    assert.equal(set.chunkSize, 99);
  } finally {
    set.close();
  }
});
