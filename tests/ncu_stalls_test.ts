/**
 * tools/device/ncu_stalls.py (the GPU machine's ranking of a kernel's source lines by warp stall
 * samples) reads Nsight Compute's source page as CSV: lines come out by their share of the
 * samples, with their three largest stall reasons when asked; a page without the stall column
 * says so.
 */
import assert from "node:assert/strict";
import { runPythonOnText, skipWithoutPython } from "./helpers/python.ts";

const SCRIPT = new URL("../tools/device/ncu_stalls.py", import.meta.url).pathname;

// the shape of `ncu --page source --csv --print-source cuda`: a preamble, then the header row
const PAGE = `"Kernel Name","k_draft_cluster"
"#","Source","Warp Stall Sampling (All Samples)","stall_wait","stall_barrier","stall_no_instructions"
"412","dc_warp_norm(v, ...);","30","5","0","25"
"426","dc_rows<DC_DCH, true>(...);","60","40","20","0"
"447","cl.sync();","10","0","10","0"
`;

Deno.test({
  name: "ncu_stalls.py ranks source lines by stall samples, with their largest reasons",
  ignore: await skipWithoutPython(["csv", "sys"]),
}, async () => {
  const r = await runPythonOnText(SCRIPT, "page.csv", PAGE, ["--top", "2", "--reasons"]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n").map((l) => l.trim().split(/\s{2,}/));
  assert.deepEqual(lines[0], ["stall samples: 100 in 3 lines"]);
  assert.equal(lines.length, 3); // --top 2
  assert.deepEqual(lines[1], [
    "60.0%",
    "426",
    "dc_rows<DC_DCH, true>(...);",
    "stall_wait 40, stall_barrier 20",
  ]);
  assert.deepEqual(lines[2], [
    "30.0%",
    "412",
    "dc_warp_norm(v, ...);",
    "stall_no_instructions 25, stall_wait 5",
  ]);
  const e = await runPythonOnText(SCRIPT, "none.csv", `"#","Source"\n"1","x"\n`);
  assert.equal(e.code, 0);
  assert.match(e.stdout, /no source page/);
});
