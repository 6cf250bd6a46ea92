/**
 * A worker thread of the embedded mode: loads the task's model on its device once, then computes
 * the documents the coordinator hands it, one at a time. A thread per GPU: the native library's
 * calls run on the calling thread, and a CUDA context stays current on the thread that made it.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { errorInfo, type FromWorker, type ToWorker } from "./messages.ts";
import { DocumentRunner, isPermanent } from "./runner.ts";

/** Progress messages at most this often. */
const PROGRESS_MS = 250;

let runner: DocumentRunner | null = null;

function send(m: FromWorker): void {
  self.postMessage(m);
}

self.onmessage = async (e: MessageEvent<ToWorker>) => {
  const m = e.data;
  if (m.type === "open") {
    try {
      runner = await DocumentRunner.open(m.spec, m.device);
      send({ type: "ready", label: runner.label });
    } catch (err) {
      send({ type: "fatal", error: errorInfo(err) });
    }
  } else if (m.type === "run") {
    let last = 0;
    try {
      const result = await runner!.run(m.job, {
        onProgress: (done, total) => {
          const now = performance.now();
          if (now - last < PROGRESS_MS && done < total) return;
          last = now;
          send({ type: "progress", done, total });
        },
      });
      send({ type: "done", result });
    } catch (err) {
      send({ type: "failed", error: errorInfo(err), permanent: isPermanent(err) });
    }
  } else if (m.type === "close") {
    runner?.close();
    runner = null;
    send({ type: "closed" });
  }
};
