/**
 * The first fill of fresh result arrays, as module outputs do it (one tap chunk after another from
 * a host buffer): a plain TypedArray copy (what TapPipeline did before) against mb_host_copy
 * (threads, each slice mapped first), alternating, in the same run.
 *
 * Usage: deno run -A tools/bench_host_copy.ts [MiB per chunk (29: a 972M dt_proj chunk)] [chunks (12)]
 */
import { Backend } from "../src/backend/backend.ts";

const mib = Number(Deno.args[0] ?? 29);
const chunks = Number(Deno.args[1] ?? 12);
if (!(mib > 0 && chunks > 0)) throw new Error("usage: bench_host_copy.ts [MiB] [chunks]");
const bytes = Math.round(mib * 2 ** 20);
const be = Backend.create("cpu");
const src = be.hostAlloc(bytes);
new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(src!, bytes)).fill(7);
const plain: number[] = [], threaded: number[] = [];
for (let i = 0; i < chunks; i++) {
  for (const way of ["plain", "threaded"] as const) {
    const dst = new Float32Array(bytes / 4); // fresh: its pages are faulted in by the copy
    const t0 = performance.now();
    if (way === "plain") {
      dst.set(new Float32Array(Deno.UnsafePointerView.getArrayBuffer(src!, bytes)));
    } else be.hostCopy(dst, src);
    (way === "plain" ? plain : threaded).push(performance.now() - t0);
  }
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rate = (ms: number) => (bytes / (ms / 1000) / 1e9).toFixed(2);
console.log(
  `${mib} MiB into a fresh array, median of ${chunks}: plain copy ${med(plain).toFixed(1)} ms ` +
    `(${rate(med(plain))} GB/s), mb_host_copy ${med(threaded).toFixed(1)} ms ` +
    `(${rate(med(threaded))} GB/s), ${navigator.hardwareConcurrency} CPUs`,
);
be.hostFree(src);
be.close();
