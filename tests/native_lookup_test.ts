/**
 * The native library lookup: $MAMBABYTE_LIB first, and when the library is nowhere the error says
 * the exact command that builds it.
 */
import assert from "node:assert/strict";
import { cudaDeviceCount, hasCuda } from "../src/backend/backend.ts";
import { findLibrary, libraryCandidates } from "../src/native/lib.ts";

/** Where the library has CUDA and sees a GPU, the no-GPU error cannot happen. (A library that
 * does not load fails the tests that need it, not this module.) */
const gpuPresent = (() => {
  try {
    return hasCuda() && cudaDeviceCount() > 0;
  } catch {
    return false;
  }
})();
if (gpuPresent) console.warn("native_lookup_test: a GPU is present; the no-GPU error is skipped");

/** readelf (binutils) reads the library's dynamic section. */
const noReadelf = await new Deno.Command("readelf", { args: ["--version"], stdout: "null" })
  .output().then(() => false, () => true);
if (noReadelf) console.warn("native_lookup_test: readelf not found; the NODELETE check is skipped");

Deno.test("MAMBABYTE_LIB is looked at first", () => {
  const before = Deno.env.get("MAMBABYTE_LIB");
  try {
    Deno.env.set("MAMBABYTE_LIB", "/opt/custom/libmambabyte.so");
    assert.equal(libraryCandidates()[0], "/opt/custom/libmambabyte.so");
  } finally {
    if (before === undefined) Deno.env.delete("MAMBABYTE_LIB");
    else Deno.env.set("MAMBABYTE_LIB", before);
  }
});

Deno.test("a missing library is one clear error naming the build command", async () => {
  // A copy of the binding module outside the repository, run from an empty folder: no build/.
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/src/native`, { recursive: true });
    await Deno.copyFile(
      new URL("../src/native/lib.ts", import.meta.url),
      `${dir}/src/native/lib.ts`,
    );
    await Deno.writeTextFile(
      `${dir}/probe.ts`,
      `import { native } from "./src/native/lib.ts";
try { native(); console.log("loaded"); } catch (e) { console.log(e.name + ": " + e.message); }`,
    );
    const env = { ...Deno.env.toObject() };
    delete env.MAMBABYTE_LIB;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-config", `${dir}/probe.ts`],
      cwd: dir,
      env,
      clearEnv: true,
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    assert.match(text, /^NativeLibraryError: native library not found/);
    assert.match(text, /`deno task build`/);
    assert.match(text, /MAMBABYTE_LIB/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "asking for CUDA where there is none is one clear error",
  ignore: gpuPresent,
}, async () => {
  const { loadModel } = await import("../mod.ts");
  await assert.rejects(
    () =>
      loadModel({
        configPath: new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname,
        modelId: "test-48x2",
        device: "cuda",
      }),
    /device cuda: (this build of the native library has no CUDA backend|no CUDA GPU found)/,
  );
});

Deno.test({
  name: "the library is never unmapped: linked with -z nodelete (DF_1_NODELETE)",
  ignore: noReadelf,
}, async () => {
  // Deno dlcloses the library at exit while pool/OpenBLAS worker threads may still sit in its
  // code; without NODELETE that crashed the process after the last test (SIGSEGV, exit 139).
  const lib = findLibrary();
  assert.ok(lib, "no built library found (run `deno task build`)");
  const out = await new Deno.Command("readelf", { args: ["-d", lib] }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.match(text, /FLAGS_1\)\s+Flags:.*\bNODELETE\b/, `${lib} lacks NODELETE:\n${text}`);
});

Deno.test("a process that ran threaded kernels exits cleanly (5 runs)", async () => {
  const probe = new URL("./helpers/threaded_exit_probe.ts", import.meta.url).pathname;
  for (let i = 0; i < 5; i++) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", probe],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `run ${i}: exit ${out.code} (signal ${out.signal}): ${err}`);
    assert.equal(new TextDecoder().decode(out.stdout).trim(), "ok");
  }
});
