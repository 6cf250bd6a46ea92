/**
 * RecurrentState: every layer's conv window and SSM state are views into one allocation that
 * neither overlap nor leave gaps, and broadcastFrom copies a one-sequence state whole (one copy)
 * with the same result as the per-layer copies it fans out to several sequences with, and that
 * fanning a sequence out to a batch takes 1 + ceil(log2 batch) copies a tensor.
 */
import assert from "node:assert/strict";
import { loadModel } from "../mod.ts";
import type { Backend } from "../src/backend/backend.ts";
import type { Tensor } from "../src/backend/tensor.ts";
import { RecurrentState } from "../src/model/workspace.ts";

const CONFIG = new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname;

/** The fixture model on the CPU. */
function fixtureModel() {
  return loadModel({ configPath: CONFIG, modelId: "test-64x3", device: "cpu", seed: 3 });
}

/** Distinct values (a Lehmer sequence from `seed`) uploaded into every tensor of `views`. */
function fillViews(be: Backend, views: Tensor[], seed: number): void {
  for (const t of views) {
    be.upload(
      t.ptr,
      Float32Array.from({ length: t.numel }, () => (seed = (seed * 48271) % 2147483647) / 2e9),
    );
  }
}

Deno.test("RecurrentState: one allocation, per-layer views; broadcastFrom whole and fanned out", async () => {
  const model = await fixtureModel();
  const be = model.backend;
  const a = model.newState(1), b = model.newState(1), c = model.newState(3);
  try {
    const views = [...a.conv, ...a.ssm];
    const ranges = views.map((t) => [Number(Deno.UnsafePointer.value(t.ptr)), t.bytes] as const)
      .sort((x, y) => x[0] - y[0]);
    for (let i = 1; i < ranges.length; i++) {
      assert.equal(ranges[i][0], ranges[i - 1][0] + ranges[i - 1][1], "views are back to back");
    }
    // ptr and bytes span exactly the views (the drafter's device rounds copy states by them)
    assert.equal(ranges[0][0], Number(Deno.UnsafePointer.value(a.ptr)));
    const total = ranges.reduce((n, r) => n + r[1], 0);
    assert.equal(RecurrentState.bytes(model.dims, 1), total);
    assert.equal(RecurrentState.bytes(model.dims, 3), 3 * total);
    fillViews(be, views, 1); // distinct contents in every view of a
    b.broadcastFrom(a);
    c.broadcastFrom(a);
    const triples = a.conv.map((t, i) => [t, b.conv[i], c.conv[i]])
      .concat(a.ssm.map((t, i) => [t, b.ssm[i], c.ssm[i]]));
    for (const [src, one, three] of triples) {
      const want = src.toHost() as Float32Array;
      assert.deepEqual(one.toHost(), want);
      const got = three.toHost() as Float32Array;
      for (let s = 0; s < 3; s++) {
        assert.deepEqual(got.subarray(s * want.length, (s + 1) * want.length), want);
      }
    }
    a.free();
    a.free(); // idempotent
  } finally {
    b.free();
    c.free();
    model.close();
  }
});

Deno.test("RecurrentState: broadcastFrom fans a chosen sequence out in doubling copies", async () => {
  const model = await fixtureModel();
  const be = model.backend;
  const src = model.newState(3);
  const copy = be.copy.bind(be);
  try {
    fillViews(be, [...src.conv, ...src.ssm], 7);
    for (const batch of [1, 2, 5, 8, 13]) {
      const dst = model.newState(batch);
      let copies = 0;
      be.copy = (d, s, n) => (copies++, copy(d, s, n));
      try {
        dst.broadcastFrom(src, 2);
      } finally {
        be.copy = copy;
      }
      // per layer and tensor: one copy of the sequence, then one per doubling
      assert.equal(
        copies,
        2 * model.dims.nLayer * (1 + Math.ceil(Math.log2(batch))),
        `batch ${batch}`,
      );
      const pairs = src.conv.map((t, i) => [t, dst.conv[i]]).concat(
        src.ssm.map((t, i) => [t, dst.ssm[i]]),
      );
      for (const [from, to] of pairs) {
        const all = from.toHost() as Float32Array;
        const per = all.length / 3;
        const want = all.subarray(2 * per, 3 * per);
        const got = to.toHost() as Float32Array;
        for (let s = 0; s < batch; s++) {
          assert.deepEqual(
            got.subarray(s * per, (s + 1) * per),
            want,
            `batch ${batch}, sequence ${s}`,
          );
        }
      }
      dst.free();
    }
  } finally {
    src.free();
    model.close();
  }
});
