/**
 * The first fill of fresh result arrays, as module outputs do it (one tap chunk after another from
 * a host buffer): a plain TypedArray copy (what TapPipeline did before) against mb_host_copy
 * (threads, each slice mapped first) with 4 KiB pages (MAMBABYTE_HOST_HUGEPAGES=0) and with
 * transparent huge pages (its default), the latter with plain stores too
 * (MAMBABYTE_HOST_COPY_NT=0); and the refill of one mapped array (a reused result) with streaming
 * and with plain stores; all alternating, in the same run.
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
const ways = {
  plain: [] as number[],
  small: [] as number[],
  huge: [] as number[],
  hugePlainStores: [] as number[],
  mapped: [] as number[],
  mappedPlainStores: [] as number[],
};
const reused = new Float32Array(bytes / 4).fill(1);
for (let i = 0; i < chunks; i++) {
  for (const way of Object.keys(ways) as (keyof typeof ways)[]) {
    Deno.env.set("MAMBABYTE_HOST_HUGEPAGES", way === "small" ? "0" : "1");
    Deno.env.set("MAMBABYTE_HOST_COPY_NT", way.endsWith("PlainStores") ? "0" : "1");
    // fresh: its pages are faulted in by the copy
    const dst = way.startsWith("mapped") ? reused : new Float32Array(bytes / 4);
    const t0 = performance.now();
    if (way === "plain") {
      dst.set(new Float32Array(Deno.UnsafePointerView.getArrayBuffer(src!, bytes)));
    } else be.hostCopy(dst, src);
    ways[way].push(performance.now() - t0);
  }
}
Deno.env.delete("MAMBABYTE_HOST_HUGEPAGES");
Deno.env.delete("MAMBABYTE_HOST_COPY_NT");
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rate = (ms: number) => (bytes / (ms / 1000) / 1e9).toFixed(2);
console.log(
  `${mib} MiB a copy, median of ${chunks}: ` +
    Object.entries({
      "fresh, plain copy": ways.plain,
      "fresh, mb_host_copy 4 KiB pages": ways.small,
      "fresh, mb_host_copy huge pages": ways.huge,
      "fresh, the same with plain stores": ways.hugePlainStores,
      "mapped, mb_host_copy": ways.mapped,
      "mapped, plain stores": ways.mappedPlainStores,
    }).map(([name, ms]) => `${name} ${med(ms).toFixed(1)} ms (${rate(med(ms))} GB/s)`).join(", ") +
    `, ${navigator.hardwareConcurrency} CPUs`,
);
be.hostFree(src);
be.close();
