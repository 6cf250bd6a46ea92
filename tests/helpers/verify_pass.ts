/**
 * The pieces of the "a verification pass equals stepping" tests (tests/speculative_test.ts on the
 * CPU, tests/cuda_model_test.ts on CUDA): the workspaces and saved buffers, two states forked
 * from one prefix, one verification pass and one decoding step.
 */

import type { MambaByteLM } from "../../mod.ts";
import { type RecurrentState, VerifyBuffers, type Workspace } from "../../src/model/workspace.ts";

/** What a verification test works in: an `rows`-row workspace, a one-row one, the saved buffers. */
export interface VerifyWorkspaces {
  ws: Workspace;
  ws1: Workspace;
  saved: VerifyBuffers;
}

/**
 * Runs `fn` with the workspaces of a `rows`-row verification pass and of single steps; frees them
 * and closes `model` afterwards, pass or fail.
 */
export async function withVerifyWorkspaces(
  model: MambaByteLM,
  rows: number,
  fn: (w: VerifyWorkspaces) => Promise<void>,
): Promise<void> {
  const ws = model.newWorkspace(rows), ws1 = model.newWorkspace(1);
  const saved = new VerifyBuffers(model.backend, model.dims, rows);
  try {
    await fn({ ws, ws1, saved });
  } finally {
    ws.free();
    ws1.free();
    saved.free();
    model.close();
  }
}

/** Two one-row copies of the state after `prefix`: one to step, one to verify. */
export async function forkStates(
  model: MambaByteLM,
  prefix: Uint8Array,
): Promise<{ stepped: RecurrentState; verified: RecurrentState }> {
  const base = await model.forwardChunks(prefix);
  const stepped = model.newState(1), verified = model.newState(1);
  stepped.broadcastFrom(base);
  verified.broadcastFrom(base);
  base.free();
  return { stepped, verified };
}

/** One verification pass of `rows` from `state`; the logits are left in `ws.logits`. */
export function verifyRows(
  model: MambaByteLM,
  ws: Workspace,
  state: RecurrentState,
  rows: Uint8Array,
  saved: VerifyBuffers,
): void {
  model.backend.upload(ws.ids.ptr, Int32Array.from(rows));
  model.embed(ws, rows.length);
  model.verifyLayers(ws, state, saved);
  model.verifyHead(ws, rows.length);
}

/** One decoding step of `byte` from `state`; the logits are left in `ws1.logits`. */
export function stepByte(
  model: MambaByteLM,
  ws1: Workspace,
  state: RecurrentState,
  byte: number,
): void {
  model.backend.upload(ws1.ids.ptr, Int32Array.of(byte));
  model.embed(ws1, 1);
  model.stepLayers(ws1, state, 1);
  model.runHead(ws1, 1);
}
