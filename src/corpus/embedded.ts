/**
 * The embedded mode: no services, this machine only. One worker thread per device (each GPU, or
 * the CPU), each loading the model once; idle threads take the next document, a failed document
 * is tried again after a doubling delay, up to --attempts tries, unless it cannot succeed.
 *
 * @module
 */

import { cudaDeviceCount, hasCuda } from "../backend/backend.ts";
import { UserError } from "../cli/errors.ts";
import type { DeviceSetting } from "../config/config.ts";
import { resolveDeviceIndex } from "../api.ts";
import type { TaskSpec } from "./flags.ts";
import type { Document } from "./inputs.ts";
import type { ErrorInfo, FromWorker, ToWorker } from "./messages.ts";
import type { RunEvents } from "./report.ts";

/** Settings of an embedded run. */
export interface EmbeddedOptions {
  spec: TaskSpec;
  outputDir: string;
  /** One worker thread per entry. */
  devices: DeviceSetting[];
  attempts: number;
  backoffMs: number;
  events: RunEvents;
  /** Called once every thread has loaded its model (the clock of bytes/s starts). */
  onReady?: (labels: string[]) => void;
}

/**
 * The devices of the embedded mode: every visible GPU for auto (when there is one) and cuda, the
 * one named by cuda:N, else the CPU.
 */
export function embeddedDevices(device: DeviceSetting): DeviceSetting[] {
  const { kind, index } = resolveDeviceIndex(device);
  if (kind === "cpu") return ["cpu"];
  if (device.startsWith("cuda:")) return [`cuda:${index}`];
  const n = hasCuda() ? cudaDeviceCount() : 0;
  return Array.from({ length: n }, (_, i) => `cuda:${i}` as DeviceSetting);
}

interface Slot {
  worker: Worker;
  label: string;
  current: { doc: Document; attempt: number } | null;
  /** Resolves the pending reply of open / close. */
  reply?: (m: FromWorker) => void;
}

function failure(error: ErrorInfo): UserError {
  return new UserError(error.message, { exitCode: error.exitCode });
}

/** Loads the model on every device; throws the first load error (after stopping every thread). */
async function startWorkers(o: EmbeddedOptions): Promise<Slot[]> {
  const slots: Slot[] = [];
  const replies: Promise<FromWorker>[] = [];
  for (const device of o.devices) {
    const worker = new Worker(new URL("./embedded_worker.ts", import.meta.url).href, {
      type: "module",
    });
    const slot: Slot = { worker, label: device, current: null };
    replies.push(new Promise((r) => (slot.reply = r)));
    worker.onmessage = (e: MessageEvent<FromWorker>) => slot.reply?.(e.data);
    worker.onerror = (e) => {
      e.preventDefault();
      slot.reply?.({ type: "fatal", error: { message: e.message, exitCode: 1 } });
    };
    worker.postMessage({ type: "open", spec: o.spec, device } satisfies ToWorker);
    slots.push(slot);
  }
  const answers = await Promise.all(replies);
  const fatal = answers.find((a) => a.type === "fatal");
  if (fatal?.type === "fatal") {
    for (const s of slots) s.worker.terminate();
    throw failure(fatal.error);
  }
  answers.forEach((a, i) => {
    if (a.type === "ready") slots[i].label = a.label;
  });
  return slots;
}

/** Frees every thread's model, then ends the threads. */
async function stopWorkers(slots: Slot[]): Promise<void> {
  await Promise.all(slots.map((s) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 10_000);
      s.reply = (m) => {
        if (m.type === "closed") {
          clearTimeout(t);
          resolve();
        }
      };
      s.worker.postMessage({ type: "close" } satisfies ToWorker);
    })
  ));
  for (const s of slots) s.worker.terminate();
}

/** Computes `docs` on this machine; every outcome goes to `o.events`. */
export async function runEmbedded(docs: Document[], o: EmbeddedOptions): Promise<void> {
  if (docs.length === 0) return;
  const slots = await startWorkers(o);
  o.onReady?.(slots.map((s) => s.label));
  const queue = docs.map((doc) => ({ doc, attempt: 1, readyAt: 0 }));
  let left = docs.length;
  let timer: ReturnType<typeof setTimeout> | undefined;
  // A thread that is writing a file listens for these signals too (src/io/atomic.ts), and its
  // exit would end that thread alone: the whole process ends here instead.
  const listeners = interruptible(() => docs.length - left);
  try {
    await new Promise<void>((resolve, reject) => {
      const idle: Slot[] = [...slots];
      const dispatch = () => {
        clearTimeout(timer);
        while (idle.length > 0 && queue.length > 0) {
          const now = Date.now();
          const i = queue.findIndex((q) => q.readyAt <= now);
          if (i < 0) {
            const next = Math.min(...queue.map((q) => q.readyAt));
            timer = setTimeout(dispatch, next - now);
            return;
          }
          const [item] = queue.splice(i, 1);
          const slot = idle.shift()!;
          slot.current = item;
          const job = { name: item.doc.name, path: item.doc.path, outputDir: o.outputDir };
          slot.worker.postMessage({ type: "run", job } satisfies ToWorker);
        }
      };
      const finished = (slot: Slot) => {
        slot.current = null;
        idle.push(slot);
        if (--left === 0) resolve();
        else dispatch();
      };
      for (const slot of slots) {
        slot.reply = (m) => {
          const cur = slot.current;
          if (m.type === "fatal") return reject(failure(m.error));
          if (cur === null) return;
          if (m.type === "progress") {
            o.events.progress(cur.doc.name, m.done, m.total);
          } else if (m.type === "done") {
            o.events.outcome({
              doc: cur.doc,
              status: "done",
              result: m.result,
              attempts: cur.attempt,
            });
            finished(slot);
          } else if (m.type === "failed") {
            if (m.permanent || cur.attempt >= o.attempts) {
              o.events.outcome({
                doc: cur.doc,
                status: "failed",
                error: m.error.message,
                attempts: cur.attempt,
              });
              finished(slot);
            } else {
              const delay = o.backoffMs * 2 ** (cur.attempt - 1);
              o.events.retry(cur.doc.name, cur.attempt, m.error.message, delay);
              queue.push({ doc: cur.doc, attempt: cur.attempt + 1, readyAt: Date.now() + delay });
              left++;
              finished(slot);
            }
          }
        };
      }
      dispatch();
    });
  } finally {
    clearTimeout(timer);
    for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
    await stopWorkers(slots);
  }
}

/** Ends the process on SIGINT (130) or SIGTERM (143), saying how to resume. */
function interruptible(finished: () => number): [Deno.Signal, () => void][] {
  const out: [Deno.Signal, () => void][] = [];
  for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    const listener = () => {
      console.error(
        `error: interrupted by ${signal} after ${finished()} documents of this run; run the ` +
          "same command again to compute the rest",
      );
      Deno.exit(code);
    };
    try {
      Deno.addSignalListener(signal, listener);
      out.push([signal, listener]);
    } catch {
      // A platform without this signal.
    }
  }
  return out;
}
