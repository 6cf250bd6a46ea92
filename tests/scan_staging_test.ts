/**
 * The tile scan's staging of whole chunks (csrc/cuda/scan.cu's scan_stage_bc_whole and
 * scan_stage_pairs: copies at constant offsets, no per-row predicate) moves every element to the
 * place the general paths give it, checked on the host by tools/scan_staging_check.sh (the
 * functions compiled with g++ and a cp_async4 that records each copy). A planted offset error in a
 * copy of scan.cu is caught, so the check is not vacuous. Skipped without g++ or python3.
 */
import assert from "node:assert/strict";
import { withTempDir } from "./helpers/temp_dir.ts";
import { missingTool } from "./helpers/tools.ts";

const ROOT = new URL("../", import.meta.url).pathname;

const missing = await missingTool("g++", "python3");
if (missing) console.warn(`scan_staging_test: skipped: ${missing}`);

async function check(scanCu?: string) {
  const env: Record<string, string> = scanCu ? { SCAN_CU: scanCu } : {};
  const o = await new Deno.Command("bash", {
    args: ["tools/scan_staging_check.sh"],
    cwd: ROOT,
    env,
  }).output();
  const text = new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr);
  return { code: o.code, text };
}

Deno.test({
  name: "the tile scan's whole-chunk staging copies each element to pos()'s place",
  ignore: missing !== null,
}, async () => {
  const r = await check();
  assert.equal(r.code, 0, r.text);
  assert.match(r.text, /^scan staging: ok \(0 mismatches\)$/m);
});

Deno.test({
  name: "the staging check catches a copy one word off",
  ignore: missing !== null,
}, async () => {
  const src = await Deno.readTextFile(`${ROOT}csrc/cuda/scan.cu`);
  const line = "cp_async4(q + j * T::STRIDE, pb, true);";
  assert.ok(src.includes(line), "scan_stage_bc_whole's first copy as the test expects it");
  await withTempDir("mb-scan-staging-", async (dir) => {
    const planted = `${dir}/scan.cu`;
    await Deno.writeTextFile(
      planted,
      src.replace(line, "cp_async4(q + j * T::STRIDE + 1, pb, true);"),
    );
    const r = await check(planted);
    assert.notEqual(r.code, 0, r.text);
    assert.match(r.text, /^scan staging: FAILED \([1-9]\d* mismatches\)$/m);
  });
});
