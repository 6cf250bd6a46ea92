/**
 * The CPU sources also build for a plain x86-64 (no -march=native, so no AVX-512): the portable
 * kernels must not depend on vector-only code. Syntax-checked with the system C compiler.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;

async function sources(): Promise<string[]> {
  const out = [`${ROOT}csrc/api.c`, `${ROOT}csrc/common/error.c`];
  for await (const e of Deno.readDir(`${ROOT}csrc/cpu`)) {
    if (e.isFile && e.name.endsWith(".c")) out.push(`${ROOT}csrc/cpu/${e.name}`);
  }
  return out.sort();
}

Deno.test("the CPU library compiles without AVX-512 (portable build)", async () => {
  const cc = Deno.env.get("CC") ?? "cc";
  for (const src of await sources()) {
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command(cc, {
        args: [
          "-std=c11",
          "-fsyntax-only",
          "-Werror=implicit-function-declaration",
          "-D_POSIX_C_SOURCE=200809L",
          `-I${ROOT}csrc`,
          `-I${ROOT}csrc/include`,
          src,
        ],
      }).output();
    } catch {
      console.warn(`native_build_test: ${cc} not found; the portable build is not checked`);
      return;
    }
    assert.equal(out.code, 0, `${src}:\n${new TextDecoder().decode(out.stderr)}`);
  }
});
