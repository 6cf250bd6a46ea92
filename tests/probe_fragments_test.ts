/**
 * The device probes' tensor-core fragment arithmetic (tools/device/batch_gemm_probe.cu,
 * dtproj_probe.cu and fused_inproj_probe.cu's x_proj) holds on the host:
 * tools/device/probe_fragments_check.cpp emulates ldmatrix.x4 and mma.m16n8k16 over the probes'
 * address formulas and output mappings and compares each product with float64. A copy with the
 * tiles' swizzle planted away is caught (misplaced elements and bank conflicts), so the check is not
 * vacuous. Skipped without g++.
 */
import assert from "node:assert/strict";
import { withTempDir } from "./helpers/temp_dir.ts";
import { missingTool } from "./helpers/tools.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const SOURCE = `${ROOT}tools/device/probe_fragments_check.cpp`;

const missing = await missingTool("g++");
if (missing) console.warn(`probe_fragments_test: skipped: ${missing}`);

async function compileAndRun(src: string, dir: string) {
  const bin = `${dir}/pfc`;
  const c = await new Deno.Command("g++", { args: ["-O2", "-std=c++17", "-o", bin, src] })
    .output();
  assert.equal(c.code, 0, new TextDecoder().decode(c.stderr));
  const o = await new Deno.Command(bin).output();
  return { code: o.code, text: new TextDecoder().decode(o.stdout) };
}

Deno.test({
  name: "the probes' fragment arithmetic equals float64 with no bank conflict",
  ignore: missing !== null,
}, async () => {
  await withTempDir("mb-probe-fragments-", async (dir) => {
    const r = await compileAndRun(SOURCE, dir);
    assert.equal(r.code, 0, r.text);
    for (const probe of ["batch_gemm_probe", "dtproj_probe", "fused_inproj_probe x_proj"]) {
      assert.match(r.text, new RegExp(`^${probe}: .* ok$`, "m"), r.text);
    }
  });
});

Deno.test({
  name: "the fragment check catches tiles read without their swizzle",
  ignore: missing !== null,
}, async () => {
  const src = await Deno.readTextFile(SOURCE);
  const swizzled = "static int tile_at(int r, int k) { return r * 64 + ((((k >> 3) ^ r) & 7) << 3)";
  assert.ok(src.includes(swizzled), "tile_at as the test expects it");
  await withTempDir("mb-probe-fragments-", async (dir) => {
    const planted = `${dir}/planted.cpp`;
    await Deno.writeTextFile(
      planted,
      src.replace(
        swizzled,
        "static int tile_at(int r, int k) { return r * 64 + ((((k >> 3)) & 7) << 3)",
      ),
    );
    const r = await compileAndRun(planted, dir);
    assert.notEqual(r.code, 0, r.text);
    assert.match(r.text, /^fused_inproj_probe x_proj: .*[1-9]\d* misplaced.* FAILED$/m, r.text);
    assert.match(r.text, /^batch_gemm_probe: .*[1-9]\d* bank conflicts: FAILED$/m, r.text);
  });
});
