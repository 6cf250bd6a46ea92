/**
 * The CPU backend's kernel paths as separate contexts, for tests that hold them to each other or
 * to a reference: "vector" (AVX-512 + OpenBLAS, the default), "scalar" (MAMBABYTE_CPU_SCALAR=1:
 * the portable kernels) and "noblas" (MAMBABYTE_CPU_NOBLAS=1: the library's own GEMM). A context
 * reads these variables when it is created, so each is made with its variable set, then restored.
 */
import { Backend } from "../../src/backend/backend.ts";

/** Runs `f` with the environment variable `name` set to `value`, then restores it. */
export function withEnv<T>(name: string, value: string, f: () => T): T {
  const old = Deno.env.get(name);
  Deno.env.set(name, value);
  try {
    return f();
  } finally {
    if (old === undefined) Deno.env.delete(name);
    else Deno.env.set(name, old);
  }
}

/** The CPU kernel paths by name. */
export type CpuPath = "vector" | "scalar" | "noblas";

const ENV: Record<CpuPath, [string, string] | null> = {
  vector: null,
  scalar: ["MAMBABYTE_CPU_SCALAR", "1"],
  noblas: ["MAMBABYTE_CPU_NOBLAS", "1"],
};

/** A new CPU context on the given kernel path (the caller closes it). */
export function cpuContext(path: CpuPath): Backend {
  const env = ENV[path];
  return env ? withEnv(env[0], env[1], () => Backend.create("cpu")) : Backend.create("cpu");
}
