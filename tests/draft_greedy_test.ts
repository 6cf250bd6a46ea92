/**
 * mb_draft_greedy (MambaByteLM.draftGreedy): a byte drafter's k greedy drafts in one native call
 * equal the same ops called one by one (embedding, a decoding step, the state copy, the head,
 * greedy sampling): the same ids, every slot of the state stack and the final state bit for bit,
 * for k from 1 to 9, from a state that has read some text, drafting from given logits or after
 * reading a byte first (a speculative round's settled byte); its argument errors are one message.
 */
import assert from "node:assert/strict";
import { loadModel } from "../mod.ts";
import { offsetPtr, type Ptr } from "../src/backend/backend.ts";
import { Tensor } from "../src/backend/tensor.ts";
import { RecurrentState } from "../src/model/workspace.ts";
import { NativeError, Status } from "../src/native/lib.ts";

const CONFIG = new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname;

Deno.test("draftGreedy: one call equals the drafter's ops one by one, bit for bit (with a read, too)", async () => {
  const lm = await loadModel({ configPath: CONFIG, modelId: "tiny", device: "cpu" });
  const be = lm.backend;
  try {
    const bytes = RecurrentState.bytes(lm.dims, 1);
    const V = lm.vocabOut;
    // a state and logits after some text, through the ops
    const start = lm.newState(1);
    const ws0 = lm.newWorkspace(1);
    const text = new TextEncoder().encode("ROMEO:\nBut soft");
    const ids0 = Tensor.zeros(be, "i32", [1]);
    for (const b of text) {
      be.upload(ids0.ptr, new Int32Array([b]));
      lm.embed(ws0, 1, ids0.ptr);
      lm.stepLayers(ws0, start, 1);
      lm.runHead(ws0, 1);
    }
    const logits0 = ws0.logits.toHost() as Float32Array;
    const readId = Tensor.zeros(be, "i32", [1]);
    be.upload(readId.ptr, new Int32Array([101])); // "e"
    for (let k = 1; k <= 9; k++) {
      for (const read of [false, true]) {
        const run = (one: boolean) => {
          const ws = lm.newWorkspace(1);
          const state = lm.newState(1);
          be.copy(state.ptr, start.ptr, bytes);
          be.upload(ws.logits.ptr, logits0);
          const stack = Tensor.zeros(be, "f32", [((k + 1) * bytes) / 4]);
          const ids = Tensor.zeros(be, "i32", [k]);
          const counter = Tensor.zeros(be, "i64", [1]);
          const at = (i: number): Ptr => offsetPtr(ids.ptr, 4 * i);
          const greedy = (out: Ptr) =>
            be.sample({
              logits: ws.logits.ptr,
              batch: 1,
              v: V,
              temperature: 1,
              topK: 1,
              topP: 0,
              seed: 0n,
              counter: counter.ptr,
              out,
            });
          if (one) {
            lm.draftGreedy(ws, state, {
              readId: read ? readId.ptr : null,
              logits: ws.logits.ptr,
              counter: counter.ptr,
              stack: stack.ptr,
              ids: ids.ptr,
              k,
            });
          } else {
            if (read) {
              lm.embed(ws, 1, readId.ptr);
              lm.stepLayers(ws, state, 1);
              lm.runHead(ws, 1);
            }
            greedy(at(0));
            be.copy(stack.ptr, state.ptr, bytes);
            for (let i = 1; i <= k; i++) {
              lm.embed(ws, 1, at(i - 1));
              lm.stepLayers(ws, state, 1);
              be.copy(offsetPtr(stack.ptr, i * bytes), state.ptr, bytes);
              if (i === k) break;
              lm.runHead(ws, 1);
              greedy(at(i));
            }
          }
          const out = {
            ids: Array.from(ids.toHost() as Int32Array),
            stack: new Uint8Array((stack.toHost() as Float32Array).buffer),
            state: new Uint8Array(
              (Tensor.view(be, "f32", [bytes / 4], state.ptr).toHost() as Float32Array).buffer,
            ),
          };
          for (const t of [stack, ids, counter]) t.free();
          ws.free();
          state.free();
          return out;
        };
        const one = run(true), ops = run(false), at = `k=${k}${read ? ", after a read" : ""}`;
        assert.deepEqual(one.ids, ops.ids, `${at}: drafts`);
        assert.ok(one.ids.every((b) => b >= 0 && b < 256), `${at}: bytes`);
        assert.deepEqual(one.stack, ops.stack, `${at}: the state stack`);
        assert.deepEqual(one.state, ops.state, `${at}: the final state`);
        assert.deepEqual(
          one.state,
          one.stack.subarray(k * bytes, (k + 1) * bytes),
          `${at}: the state ends as slot k`,
        );
      }
    }
    readId.free();
    ids0.free();
    ws0.free();
    start.free();
  } finally {
    lm.close();
  }
});

Deno.test("draftGreedy: k outside 1..64, or table states outside the copied state, refused", async () => {
  const lm = await loadModel({ configPath: CONFIG, modelId: "tiny", device: "cpu" });
  const be = lm.backend;
  const ws = lm.newWorkspace(1);
  const state = lm.newState(1);
  const bytes = RecurrentState.bytes(lm.dims, 1);
  const stack = Tensor.zeros(be, "f32", [(66 * bytes) / 4]);
  const ids = Tensor.zeros(be, "i32", [65]);
  const counter = Tensor.zeros(be, "i64", [1]);
  try {
    const base = { logits: ws.logits.ptr, counter: counter.ptr, stack: stack.ptr, ids: ids.ptr };
    for (const k of [0, 65]) {
      assert.throws(() => lm.draftGreedy(ws, state, { ...base, k }), (e: unknown) => {
        assert.ok(e instanceof NativeError);
        assert.equal(e.status, Status.INVALID);
        assert.match(e.message, new RegExp(`k ${k} is outside 1\\.\\.64`));
        return true;
      });
    }
    // the table's states outside the copied bytes: refused before any work
    const table = lm.newState(1);
    assert.throws(
      () =>
        be.draftGreedy({
          ...lm.decodeLayersArgs(ws, table.decodeTable(lm.weights)!, 1),
          embedding: lm.weights.embedding.ptr,
          vocabRows: lm.weights.vocabRows,
          normFWeight: lm.weights.normFWeight.ptr,
          normFBias: lm.weights.normFBias?.ptr ?? null,
          lmHead: lm.weights.lmHead.ptr,
          vocabOut: lm.vocabOut,
          logits: ws.logits.ptr,
          counter: counter.ptr,
          state: state.ptr, // another state than the table's
          stateBytes: bytes,
          stack: stack.ptr,
          ids: ids.ptr,
          k: 2,
        }),
      /conv window or SSM state lies outside \[state, state \+ state_bytes\)/,
    );
    table.free();
  } finally {
    for (const t of [stack, ids, counter]) t.free();
    ws.free();
    state.free();
    lm.close();
  }
});
