/**
 * tools/device/san_sum.py (the GPU machine's summary of a compute-sanitizer log of cuda_vs_cpu)
 * lists each distinct report once, keyed by kind, kernel (template arguments kept, parameters
 * dropped) and offset, with its count and the test row printed last before its first report.
 */
import assert from "node:assert/strict";
import { runPythonOnText, skipWithoutPython } from "./helpers/python.ts";

const SCRIPT = new URL("../tools/device/san_sum.py", import.meta.url).pathname;

// the shape of `compute-sanitizer --tool synccheck ./cuda_vs_cpu --small`: the test's rows and
// the sanitizer's reports in one stream
const LOG = `========= COMPUTE-SANITIZER
op               case                                         output        rel.err      tol
ssu_dt           b=3 d=64 n=16 R=8 f32 bias=1 Dz=0             y           1.000e-07    1e-05  ok
ssu_dt           b=6 d=1000 n=16 R=112 bf16 bias=0 Dz=1        y           1.355e-07    1e-05  ok
========= Barrier error detected. Divergent thread(s) in block.
=========     at void k_ssu_dt_rows<(int)8, unsigned short, (int)4, (bool)1>(SsuDtArgs)+0x2650
=========     by thread (0,3,0) in block (0,4,0)
========= Barrier error detected. Divergent thread(s) in block.
=========     at void k_ssu_dt_rows<(int)8, unsigned short, (int)4, (bool)1>(SsuDtArgs)+0x2650
=========     by thread (0,2,0) in block (0,4,0)
graph            decode-like step of 12, replayed twice       logits      0.000e+00    0e+00  ok
========= Uninitialized __global__ memory read of size 4 bytes
=========     at void k_conv_seq<float>(const T1 *, long, const float *)+0x2f60
=========     by thread (32,0,0) in block (0,0,0)
========= ERROR SUMMARY: 3 errors
`;

Deno.test({
  name: "san_sum.py lists each distinct sanitizer report once, with its count and first case",
  ignore: await skipWithoutPython(["re", "sys"]),
}, async () => {
  const r = await runPythonOnText(SCRIPT, "san.log", LOG);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n").map((l) => l.trim().split(/\s*\|\s*|\s{2,}/));
  assert.deepEqual(lines, [
    ["2 distinct reports"],
    [
      "2",
      "Barrier error detected. Divergent thread(s) in block.",
      "k_ssu_dt_rows<(int)8, unsigned short, (int)4, (bool)1>+0x2650",
      "first during: ssu_dt b=6 d=1000 n=16 R=112 bf16 bias=0 Dz=1",
    ],
    [
      "1",
      "Uninitialized __global__ memory read",
      "k_conv_seq<float>+0x2f60",
      "first during: graph decode-like step of 12, replayed twice",
    ],
  ]);
  const clean = await runPythonOnText(SCRIPT, "clean.log", "========= ERROR SUMMARY: 0 errors\n");
  assert.equal(clean.code, 0);
  assert.equal(clean.stdout.trim(), "0 distinct reports");
});
