/**
 * The GPU machine's two SASS readers, on small pages in their inputs' shapes:
 * - tools/device/ncu_groups.py groups a kernel's SASS lines (Nsight Compute's source page as CSV)
 *   by how often each ran, and counts what ran after the kernel's PDL wait (ACQBULK);
 * - tools/device/sass_wait_order.py lists, from `cuobjdump -sass` text, the kernels whose
 *   read-only loads (LDG ... CONSTANT) come before their PDL wait;
 * - tools/device/sass_after_wait.py shows what a kernel runs after its PDL wait and how many
 *   global loads go out before an instruction uses one.
 */
import assert from "node:assert/strict";
import { runPythonOnText, skipWithoutPython } from "./helpers/python.ts";

const GROUPS = new URL("../tools/device/ncu_groups.py", import.meta.url).pathname;
const ORDER = new URL("../tools/device/sass_wait_order.py", import.meta.url).pathname;
const AFTER = new URL("../tools/device/sass_after_wait.py", import.meta.url).pathname;

// `ncu --page source --csv --print-source sass`: a preamble, the header row, a line per instruction
const PAGE = `"Kernel Name","k_demo"
"#","Address","Source","Instructions Executed","Warp Stall Sampling (All Samples)"
"1","0x0","LDC R1, c[0x0][0x28]","64","2"
"2","0x10","IMAD R2, R3, R4, RZ","64","0"
"3","0x20","ACQBULK","64","4"
"4","0x30","LDG.E R5, desc[UR4][R2.64]","64","10"
"5","0x40","FFMA R6, R5, R5, R6","256","3"
"6","0x50","@P0 BRA 0x40","256","1"
"7","0x60","EXIT","64","0"
`;

Deno.test({
  name: "ncu_groups.py groups SASS lines by their counts and splits them at the PDL wait",
  ignore: await skipWithoutPython(["csv", "collections"]),
}, async () => {
  const r = await runPythonOnText(GROUPS, "page.csv", PAGE, ["--top", "4"]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n").map((l) => l.trim());
  assert.equal(lines[0], "832 warp instructions, 20 stall samples");
  // the loop body (two lines, 256 times) first, then the five once-a-warp lines
  assert.match(
    lines[1],
    /^ran\s+256 x\s+2 lines =\s+512 \(61\.5%\), samples 20\.0%: FFMA 1 BRA 1$/,
  );
  assert.match(lines[2], /^ran\s+64 x\s+5 lines =\s+320 \(38\.5%\), samples 80\.0%: /);
  // from ACQBULK on: 64 x 3 + 512 = 704 instructions, 18 of the 20 samples
  assert.equal(
    lines[3],
    "after the PDL wait: 704 warp instructions (84.6%), 90.0% of the samples",
  );
  assert.equal(lines.length, 4);
});

// `cuobjdump -sass`: a "Function :" header per kernel, then its instructions
const SASS = `
        Function : k_weights_early
        /*0000*/                   LDG.E.128.CONSTANT R4, desc[UR4][R2.64] ;  /* 0x0000 */
        /*0010*/                   ACQBULK ;                                  /* 0x0000 */
        /*0020*/                   LDG.E R6, desc[UR4][R8.64] ;               /* 0x0000 */
        Function : k_after_only
        /*0000*/                   ACQBULK ;                                  /* 0x0000 */
        /*0010*/                   LDG.E.CONSTANT R6, desc[UR4][R8.64] ;      /* 0x0000 */
        Function : k_no_wait
        /*0000*/                   LDG.E.CONSTANT R6, desc[UR4][R8.64] ;      /* 0x0000 */
`;

Deno.test({
  name: "sass_wait_order.py lists the kernels with read-only loads before their PDL wait",
  ignore: await skipWithoutPython(["re"]),
}, async () => {
  const r = await runPythonOnText(ORDER, "sass.txt", SASS);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n").map((l) => l.trim());
  assert.equal(lines[0], "k_weights_early: 1 read-only loads before the wait, 0 after");
  assert.match(lines[1], /^\/\*0000\*\/\s+LDG\.E\.128\.CONSTANT R4, desc\[UR4\]\[R2\.64\] ;$/);
  // k_after_only's load follows its wait, k_no_wait has no wait: neither is listed
  assert.equal(lines[2], "1 kernels with read-only loads before their wait");
  assert.equal(lines.length, 3);
});

// three kernels: one whose loads go out together, one whose second load waits behind the first
// one's use and a branch (the decoding norms' former form), and one the pattern leaves out
const AFTER_SASS = `
        Function : k_together
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   ACQBULK ;
        /*0020*/                   LDG.E R4, desc[UR4][R2.64] ;
        /*0030*/                   LDG.E R5, desc[UR4][R2.64+0x400] ;
        /*0040*/                   FADD R6, R4, R5 ;
        /*0050*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0060*/                   EXIT ;
        Function : k_one_by_one
        /*0000*/                   ACQBULK ;
        /*0010*/                   LDG.E R4, desc[UR4][R2.64] ;
        /*0020*/                   STG.E desc[UR4][R8.64], R4 ;
        /*0030*/              @!P0 BRA 0x60 ;
        /*0040*/                   LDG.E R5, desc[UR4][R2.64+0x400] ;
        /*0050*/                   FADD R6, R6, R5 ;
        /*0060*/                   EXIT ;
        Function : k_other
        /*0000*/                   ACQBULK ;
`;

Deno.test({
  name: "sass_after_wait.py counts the loads a kernel has in flight after its PDL wait",
  ignore: await skipWithoutPython(["re", "argparse"]),
}, async () => {
  const r = await runPythonOnText(AFTER, "sass.txt", AFTER_SASS, [
    "^k_(together|one)",
    "--max",
    "9",
  ]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n").map((l) => l.trim());
  assert.deepEqual(lines, [
    "k_together: 3 instructions to the first barrier, 2 global loads, 0 branches, " +
    "2 loads in flight before a first use",
    "*LDG.E *LDG.E FADD",
    // no barrier: up to the end (EXIT counts); the store reads R4, so one load was in flight
    "k_one_by_one: 6 instructions to the first barrier, 2 global loads, 1 branches, " +
    "1 loads in flight before a first use",
    "*LDG.E STG.E *BRA *LDG.E FADD EXIT",
  ]);
});
