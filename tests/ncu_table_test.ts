/**
 * tools/device/ncu_table.py (the GPU machine's summary of Nsight Compute reports) reads the text
 * report ncu 2025 prints: a report of two kernels, trimmed from a real H200 run, gives one line
 * each with its launch shape and metrics, and a report without kernels is an error.
 */
import assert from "node:assert/strict";
import { runPythonOnText, skipWithoutPython } from "./helpers/python.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const SCRIPT = `${ROOT}tools/device/ncu_table.py`;

const REPORT = `==PROF== Connected to process 1198 (/work/main/build-cuda/cuda_bench)
[1198] cuda_bench@127.0.0.1
  void k_gemv<unsigned short, 1, 32, true, true, 1>(const float *, long, const unsigned short *, const float *, int, long, long, float *, long, ConvEpi, int) (896, 1, 1)x(256, 1, 1), Context 1, Stream 13, Device 0, CC 9.0
    Section: GPU Speed Of Light Throughput
    ----------------------- ----------- ------------
    Metric Name             Metric Unit Metric Value
    ----------------------- ----------- ------------
    DRAM Frequency                  Ghz         3.20
    Memory Throughput                 %        61.43
    DRAM Throughput                   %        58.62
    Duration                         us        11.09
    ----------------------- ----------- ------------

    Section: Memory Workload Analysis
    Memory Throughput                          Gbyte/s     2,815.12
    Section: Scheduler Statistics
    Active Warps Per Scheduler          warp         9.73
    Eligible Warps Per Scheduler        warp         0.30
    Issued Warp Per Scheduler                        0.26
    Section: Warp State Statistics
    Warp Cycles Per Issued Instruction             cycle         6.56
    Section: Launch Statistics
    Registers Per Thread             register/thread              40
    Dynamic Shared Memory Per Block      Kbyte/block            0
    Section: Occupancy
    Achieved Occupancy                        %        60.88
  k_add_norm_reg(const float *, float *, int) (1, 1, 1)x(256, 1, 1), Context 1, Stream 13, Device 0, CC 9.0
    Section: GPU Speed Of Light Throughput
    DRAM Throughput                   %         0.62
    Duration                         ms         1.50
`;

Deno.test({
  name: "ncu_table.py summarises an Nsight Compute text report, a line per kernel",
  ignore: await skipWithoutPython(["re", "sys"]),
}, async () => {
  const r = await runPythonOnText(SCRIPT, "ncu.log", REPORT);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n").map((l) => l.trim().split(/\s{2,}/));
  assert.equal(lines.length, 3, r.stdout);
  assert.deepEqual(lines[0].slice(0, 6), ["#", "kernel", "grid", "block", "us", "DRAM%"]);
  assert.deepEqual(lines[1], [
    "0",
    "k_gemv<unsigned short, 1, 32, true, true, 1>",
    "896x1x1",
    "256x1x1",
    "11.09",
    "58.62",
    "2815.12",
    "60.88",
    "9.73",
    "0.30",
    "0.26",
    "6.56",
    "40",
    "0",
  ]);
  // ms converted to us; metrics the report lacks are "-"
  assert.deepEqual(lines[2].slice(0, 7), [
    "1",
    "k_add_norm_reg",
    "1x1x1",
    "256x1x1",
    "1500.00",
    "0.62",
    "-",
  ]);
  const e = await runPythonOnText(SCRIPT, "empty.log", "==PROF== nothing\n");
  assert.equal(e.code, 1);
  assert.match(e.stdout, /no kernels found/);
});
