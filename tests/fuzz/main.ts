/**
 * The long fuzz run: `deno task fuzz --cases N [--seed S] [--memory-mb M] [--timeout-ms T]
 * [--targets a,b] [--start I] [--cli-every K]`. Prints the counts by outcome and by target, the
 * memory peak, the slowest cases, and every case that was neither a clean error nor a success
 * (rerun one with `--start <index> --cases 1` and the same seed). Exits 1 if there was any.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { BUILD_COMMAND, findLibrary, libraryCandidates } from "../../src/native/lib.ts";
import { runFuzz } from "./runner.ts";
import { OUTCOMES } from "./targets.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    cases: { type: "string", default: "1000" },
    seed: { type: "string", default: "1" },
    start: { type: "string", default: "0" },
    "memory-mb": { type: "string", default: "512" },
    "timeout-ms": { type: "string", default: "20000" },
    "cli-every": { type: "string", default: "100" },
    targets: { type: "string", default: "" },
  },
});

const num = (name: keyof typeof values): number => {
  const v = Number(values[name]);
  if (!Number.isSafeInteger(v) || v < 0) {
    console.error(`fuzz: --${name} must be a non-negative integer`);
    Deno.exit(2);
  }
  return v;
};

// Without the native library every case that loads weights would end as an internal error and be
// counted as a crash of the parser under test: say what is missing instead.
if (!findLibrary()) {
  console.error(
    `fuzz: the native library is not built (looked at ${libraryCandidates().join(", ")}); ` +
      `run \`${BUILD_COMMAND}\` first`,
  );
  Deno.exit(1);
}

const cases = num("cases");
let done = 0;
const summary = await runFuzz({
  seed: num("seed"),
  cases,
  start: num("start"),
  memoryMB: num("memory-mb"),
  timeoutMs: num("timeout-ms"),
  cliEvery: num("cli-every"),
  targets: (values.targets as string).split(",").filter(Boolean),
  onResult: (r) => {
    done++;
    if (r.outcome !== "clean-error" && r.outcome !== "success") {
      console.log(`#${r.index} ${r.target} ${r.outcome}: ${r.desc} :: ${r.detail ?? ""}`);
    }
    if (done % 500 === 0) console.error(`... ${done}/${cases}`);
  },
});

console.log(
  `\nfuzz: ${cases} cases, seed ${values.seed}, ${summary.seconds.toFixed(0)} s, ` +
    `memory cap ${values["memory-mb"]} MiB a case (worker killed at ` +
    `${Number(values["memory-mb"]) * 3} MiB), ${summary.cliCases} through the command line`,
);
for (const o of OUTCOMES) console.log(`  ${o.padEnd(12)} ${summary.counts[o]}`);
console.log("by target:");
for (const [t, c] of Object.entries(summary.byTarget)) {
  console.log(`  ${t.padEnd(13)} ${Object.entries(c).map(([o, n]) => `${o} ${n}`).join(", ")}`);
}
console.log(
  `largest growth of resident memory in a case: ${summary.maxGrowthMB.toFixed(0)} MiB ` +
    `(${summary.maxGrowthCase}); largest worker: ${summary.maxPeakMB.toFixed(0)} MiB`,
);
console.log("slowest cases:");
for (const r of summary.slowest) console.log(`  #${r.index} ${r.ms.toFixed(0)} ms ${r.desc}`);
Deno.exit(summary.failures.length > 0 ? 1 : 0);
