/**
 * A child process for the interruption tests: writes a record of `gib` GiB (default 1) to the
 * output path through writeOutputs, so that the test can signal it mid-write.
 *
 * deno run -A tests/helpers/write_large_output.ts <path> [gib]
 *
 * @module
 */

import { float32, writeOutputs } from "../../src/io/mod.ts";

const [path, gib = "1"] = Deno.args;
// One 64 MiB tensor, stored under many layer indices: a large file from little memory.
const chunk = float32([16 << 20], new Float32Array(16 << 20).fill(0.5));
const layers = new Map<number, unknown>();
for (let i = 0; i < Number(gib) * 16; i++) layers.set(i, chunk);
await writeOutputs(path, { prompt: "interrupt me", discrete_A: layers });
console.log("done");
