/**
 * What the decoding tests share: whether a GPU is present, and the logits of stepping a model
 * through a text one step at a time.
 *
 * @module
 */

import type { MambaByteLM } from "../../mod.ts";
import { cudaDeviceCount, hasCuda } from "../../src/backend/backend.ts";

/** Whether a CUDA build and a device are both here. */
export function gpuPresent(): boolean {
  try {
    return hasCuda() && cudaDeviceCount() > 0;
  } catch {
    return false;
  }
}

/**
 * The logits of every step over `text` (stepLayers, one byte a step), `batch` sequences fed the
 * same bytes shifted by b.
 */
export function stepLogits(model: MambaByteLM, text: Uint8Array, batch = 1): Float32Array[] {
  const ws = model.newWorkspace(batch), state = model.newState(batch);
  const out: Float32Array[] = [];
  try {
    for (let t = 0; t < text.length; t++) {
      const ids = Int32Array.from({ length: batch }, (_, b) => text[(t + b) % text.length]);
      model.backend.upload(ws.ids.ptr, ids);
      model.embed(ws, batch);
      model.stepLayers(ws, state, batch);
      model.runHead(ws, batch);
      const row = new Float32Array(batch * 256);
      model.backend.download(row, ws.logits.ptr);
      out.push(row);
    }
  } finally {
    ws.free();
    state.free();
  }
  return out;
}
