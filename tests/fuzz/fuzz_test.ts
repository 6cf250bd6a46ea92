// The short deterministic fuzz run of `deno task test`: fixed seeds, a few hundred cases over
// every format (and a few through the command line); anything but a clean error or a success
// fails, with the case's index so that `deno task fuzz --seed 20240 --start <i> --cases 1` reruns it.

import assert from "node:assert/strict";
import { TARGETS } from "./generators.ts";
import { runFuzz } from "./runner.ts";

const SEED = 20240;
const CASES = 320;
/** The targets whose short run must see both a success and a clean error. */
const BOTH_OUTCOMES = [
  "safetensors",
  "torch-zip",
  "hf-folder",
  "pickle",
  "yaml",
  "write",
  "read",
  "tokenizer",
  "argv",
];

Deno.test({
  name: `fuzz: ${CASES} cases (seed ${SEED}) end in a clean error or a success`,
  sanitizeResources: false,
  async fn() {
    const s = await runFuzz({ seed: SEED, cases: CASES, cliEvery: 50, memoryMB: 512 });
    const failures = s.failures.map((r) =>
      `#${r.index} ${r.target} ${r.outcome}: ${r.desc} :: ${r.detail ?? ""}`
    );
    assert.deepEqual(failures, []);
    // Not vacuous: every format ran, and both outcomes occur for the checkpoint readers.
    for (const t of TARGETS) {
      const n = Object.values(s.byTarget[t] ?? {}).reduce((a, b) => a + b, 0);
      assert.ok(n >= CASES / TARGETS.length - 1, `${t}: ${n} cases`);
    }
    for (const t of BOTH_OUTCOMES) {
      assert.ok((s.byTarget[t]["success"] ?? 0) > 0, `${t}: no successful case`);
      assert.ok((s.byTarget[t]["clean-error"] ?? 0) > 0, `${t}: no clean error`);
    }
    assert.ok(s.cliCases >= 2, `${s.cliCases} command-line cases`);
    assert.ok(s.maxPeakMB > 0 && s.maxGrowthMB > 0, "memory was not measured");
  },
});
