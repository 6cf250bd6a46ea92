/**
 * The C sources build in the two ways the README promises beside CMake:
 * - for a plain x86-64 (no -march=native, so no AVX-512): the portable kernels must not depend on
 *   vector-only code (syntax-checked with the system C compiler), and for x86-64-v3 (AVX2 + FMA,
 *   no AVX-512): the 8-lane kernels compile without warnings;
 * - without CMake (tools/build.sh --without-cmake), with CMakeLists.txt's C flags and no warning,
 *   into a temporary folder; the library it makes loads and runs an op;
 * - the GPU machine's C test programs, which CMake builds only with CUDA, compile and link here.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;
const CC = Deno.env.get("CC") ?? "cc";

/** Why the C compiler cannot run here, or null when it can. */
const noCompiler = await new Deno.Command(CC, { args: ["--version"], stdout: "null" })
  .output().then(
    (o) => o.success ? null : `${CC} --version failed`,
    () => `${CC} not found`,
  );
if (noCompiler) console.warn(`native_build_test: skipped: ${noCompiler}`);

async function sources(): Promise<string[]> {
  const out = [`${ROOT}csrc/api.c`, `${ROOT}csrc/common/error.c`];
  for await (const e of Deno.readDir(`${ROOT}csrc/cpu`)) {
    if (e.isFile && e.name.endsWith(".c")) out.push(`${ROOT}csrc/cpu/${e.name}`);
  }
  return out.sort();
}

/** Every C source of the CPU library syntax-checked with these extra flags. */
async function syntaxCheck(extra: string[]): Promise<void> {
  for (const src of await sources()) {
    const out = await new Deno.Command(CC, {
      args: [
        "-std=c11",
        "-fsyntax-only",
        ...extra,
        "-D_POSIX_C_SOURCE=200809L",
        `-I${ROOT}csrc`,
        `-I${ROOT}csrc/include`,
        src,
      ],
    }).output();
    assert.equal(out.code, 0, `${src}:\n${new TextDecoder().decode(out.stderr)}`);
  }
}

Deno.test({
  name: "the CPU library compiles without AVX-512 (portable build)",
  ignore: noCompiler !== null,
}, () => syntaxCheck(["-Werror=implicit-function-declaration"]));

// The 8-lane kernels (MB_AVX2) on any machine; tests/cpu_avx2_test.ts runs them.
Deno.test({
  name: "the CPU library's 8-lane (AVX2 + FMA) kernels compile without AVX-512",
  ignore: noCompiler !== null,
}, () => syntaxCheck(["-Wall", "-Werror", "-Wno-unused-parameter", "-march=x86-64-v3"]));

/** CMakeLists.txt's compile options for C: `$<$<COMPILE_LANGUAGE:C>:-O3 -Wall ...>`. */
async function cmakeCFlags(): Promise<string[]> {
  const text = await Deno.readTextFile(`${ROOT}csrc/CMakeLists.txt`);
  const flags: string[] = [];
  for (const m of text.matchAll(/\$<\$<COMPILE_LANGUAGE:C>:([^>]*)>/g)) {
    flags.push(...m[1].trim().split(/\s+/));
  }
  for (const m of text.matchAll(/target_compile_definitions\(mambabyte PRIVATE ([^)]*)\)/g)) {
    for (const d of m[1].trim().split(/\s+/)) if (!d.startsWith("MB_")) flags.push(`-D${d}`);
  }
  return flags;
}

Deno.test({
  name: "tools/build.sh builds without CMake, with CMakeLists' C flags and no warning",
  ignore: noCompiler !== null,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "mambabyte_nocmake_" });
  try {
    const dec = new TextDecoder();
    const build = await new Deno.Command("bash", {
      args: [`${ROOT}tools/build.sh`, "--without-cmake", "--build-dir", dir],
      env: { CC },
    }).output();
    const log = dec.decode(build.stdout) + dec.decode(build.stderr);
    assert.equal(build.code, 0, log);
    assert.doesNotMatch(log, /warning:/, log);
    const command = log.split("\n").find((l) => l.includes("without CMake:")) ?? "";
    const used = command.split(/\s+/);
    const wanted = await cmakeCFlags();
    assert.ok(wanted.includes("-Wall"), `CMakeLists.txt's C flags not found: ${wanted}`);
    for (const f of wanted) assert.ok(used.includes(f), `build.sh lacks CMake's ${f}: ${command}`);

    // The library it made loads (ABI version checked on load) and runs an op.
    const probe = `
import { Backend } from "${ROOT}src/backend/backend.ts";
const be = Backend.create("cpu", { threads: 1 });
const p = be.alloc(8);
be.upload(p, Float32Array.of(-1, 3));
be.logSoftmax({ logits: p, n: 1, v: 2, out: p });
const out = new Float32Array(2);
be.download(out, p);
be.free(p);
be.close();
console.log(JSON.stringify({ info: be.kind, sum: Math.exp(out[0]) + Math.exp(out[1]) }));`;
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["eval", probe],
      env: { MAMBABYTE_LIB: `${dir}/libmambabyte.so`, NO_COLOR: "1" },
    }).output();
    assert.equal(run.code, 0, dec.decode(run.stderr));
    const got = JSON.parse(dec.decode(run.stdout));
    assert.equal(got.info, "cpu");
    assert.ok(Math.abs(got.sum - 1) < 1e-6, `softmax sums to ${got.sum}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** The library the other tests load: MAMBABYTE_LIB, else the default build's. */
const LIB = Deno.env.get("MAMBABYTE_LIB") ?? `${ROOT}build/libmambabyte.so`;
const noLib = await Deno.stat(LIB).then(() => null, () => `${LIB} not built`);
if (noLib) console.warn(`native_build_test: the GPU test programs' build skipped: ${noLib}`);

Deno.test({
  name: "the GPU test programs (csrc/tests/cuda_*.c) compile and link as CMake builds them",
  ignore: noCompiler !== null || noLib !== null,
}, async () => {
  // CMake builds them only with CUDA; compiling them here against the public header catches a
  // broken C test before it costs a GPU machine's build.
  const dir = await Deno.makeTempDir({ prefix: "mambabyte_cudatests_" });
  try {
    const libDir = LIB.slice(0, LIB.lastIndexOf("/"));
    for (const prog of ["cuda_vs_cpu", "cuda_bench"]) {
      const out = await new Deno.Command(CC, {
        args: [
          "-std=c11",
          "-O2",
          "-Wall",
          "-D_POSIX_C_SOURCE=200809L",
          `-I${ROOT}csrc/include`,
          `${ROOT}csrc/tests/${prog}.c`,
          `-L${libDir}`,
          `-l:${LIB.slice(LIB.lastIndexOf("/") + 1)}`,
          "-lm",
          "-ldl",
          "-o",
          `${dir}/${prog}`,
        ],
      }).output();
      const log = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, `${prog}:\n${log}`);
      assert.doesNotMatch(log, /warning:/, `${prog}:\n${log}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
