/**
 * The CPU backend's 8-lane kernels (AVX2 + FMA, csrc/cpu/*.c under MB_AVX2), which a build for a
 * processor without AVX-512 runs (AMD Zen 1-3, most Intel client CPUs): where the default build
 * runs the AVX-512 kernels instead, a library built for x86-64-v3 runs the CPU kernel tests
 * (float64 references, and the vector against the scalar path) in a subprocess. Where the default
 * build is already the 8-lane one, every test runs them. (tests/native_build_test.ts compiles them
 * on any machine.) mbv8_exp's fast path (2^n added to the exponent field) is held to its full form
 * bit for bit by csrc/tests/vmath8_check.c, and the nuclear norm's 4-lane Jacobi sweeps to the
 * one-matrix ones by csrc/tests/nuc4_check.c.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;
const CC = Deno.env.get("CC") ?? "cc";
const dec = new TextDecoder();

const noCompiler = await new Deno.Command(CC, { args: ["--version"], stdout: "null" })
  .output().then(
    (o) => o.success ? null : `${CC} --version failed`,
    () => `${CC} not found`,
  );

/** The processor's flags (x86 Linux), or an empty set. */
async function cpuFlags(): Promise<Set<string>> {
  const text = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const line = text.split("\n").find((l) => l.startsWith("flags")) ?? "";
  return new Set(line.split(":")[1]?.trim().split(/\s+/) ?? []);
}
const flags = await cpuFlags();
const noAvx2 = noCompiler ??
  (!flags.has("avx2") || !flags.has("fma") ? "this processor has no AVX2 + FMA" : null);
if (noAvx2) console.warn(`cpu_avx2_test: mbv8_exp's check skipped: ${noAvx2}`);
const runSkip = noAvx2 ??
  (!flags.has("avx512f")
    ? "the default build runs the 8-lane kernels here (every CPU test covers them)"
    : null);
if (runSkip) console.warn(`cpu_avx2_test: the x86-64-v3 library's run skipped: ${runSkip}`);

Deno.test({
  name: "a library built for x86-64-v3 runs the 8-lane kernels and passes the CPU kernel tests",
  ignore: runSkip !== null,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "mambabyte_avx2_" });
  try {
    const build = await new Deno.Command("bash", {
      args: [`${ROOT}tools/build.sh`, "--build-dir", dir, "--march", "x86-64-v3"],
      env: { CC },
    }).output();
    assert.equal(build.code, 0, dec.decode(build.stderr));
    const env = { MAMBABYTE_LIB: `${dir}/libmambabyte.so`, NO_COLOR: "1" };
    const info = await new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { Backend } from "${ROOT}src/backend/backend.ts";
const be = Backend.create("cpu", { threads: 1 });
console.log(be.info().simd);
be.close();`,
      ],
      env,
    }).output();
    assert.equal(info.code, 0, dec.decode(info.stderr));
    assert.equal(dec.decode(info.stdout).trim(), "avx2");
    const tests = await new Deno.Command(Deno.execPath(), {
      args: [
        "test",
        "--allow-all",
        `${ROOT}tests/kernels_cpu_test.ts`,
        `${ROOT}tests/kernels_discrete_a_test.ts`,
      ],
      env,
    }).output();
    const log = dec.decode(tests.stdout) + dec.decode(tests.stderr);
    assert.equal(tests.code, 0, log.slice(-4000));
    assert.match(log, /ok \| \d+ passed \| 0 failed/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** Compiles csrc/tests/<name>.c (with `sources` from csrc) for x86-64-v3 and runs it. */
async function runCheck(name: string, std: string, sources: string[], args: string[]) {
  const dir = await Deno.makeTempDir({ prefix: `mambabyte_${name}_` });
  try {
    const exe = `${dir}/${name}`;
    const cc = await new Deno.Command(CC, {
      args: [
        `-std=${std}`,
        "-O2",
        "-Wall",
        "-Werror",
        "-Wno-unused-function",
        "-march=x86-64-v3",
        "-D_POSIX_C_SOURCE=200809L",
        `-I${ROOT}csrc`,
        `-I${ROOT}csrc/include`,
        `${ROOT}csrc/tests/${name}.c`,
        ...sources.map((s) => `${ROOT}csrc/${s}`),
        "-o",
        exe,
        "-lm",
        "-lpthread",
      ],
    }).output();
    assert.equal(cc.code, 0, dec.decode(cc.stderr));
    const run = await new Deno.Command(exe, { args }).output();
    const out = dec.decode(run.stdout);
    assert.equal(run.code, 0, out);
    return out;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "nuclear_from_gram4 (4 positions' Jacobi sweeps at once) gives the one-matrix bits",
  ignore: noAvx2 !== null,
}, async () => {
  // gnu11 lets gcc contract multiply-adds (CMake's default); c11 does not (tools/build.sh)
  for (const std of ["c11", "gnu11"]) {
    const out = await runCheck("nuc4_check", std, [
      "cpu/pool.c",
      "cpu/ctx.c",
      "common/error.c",
      "common/host_copy.c",
    ], []);
    const m = out.match(/(\d+) lanes checked, 0 mismatched/);
    assert.ok(m && Number(m[1]) > 7000, `${std}: ${out}`);
  }
});

Deno.test({
  name:
    "mbv8_exp's fast path gives its full form's bits (range ends, mixed vectors, 1/7 of floats)",
  ignore: noAvx2 !== null,
}, async () => {
  const out = await runCheck("vmath8_check", "c11", [], ["7"]);
  const m = out.match(/(\d+) lanes checked, 0 mismatched/);
  assert.ok(m && Number(m[1]) > 600_000_000, out);
});
