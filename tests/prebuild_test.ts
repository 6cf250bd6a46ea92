/**
 * tools/device/prebuild.sh builds the CUDA library and its C test programs on a machine with nvcc
 * but no cuBLAS and no GPU (cuBLAS through the stand-in of tools/device/cublas_stub), and
 * tools/device/lib.sh's use_prebuilt takes that build on the GPU machine only for the same csrc.
 * Here: the archive holds the library and both programs, a program unpacked elsewhere loads the
 * library (its run path) with CUDA built in and finds no device (GPUs hidden), and a changed csrc
 * is refused.
 * The script writes its git-ignored folders in the repository (build-stub, build-cuda-pre,
 * .gpu-build), as a developer's run does; skipped without nvcc or cmake.
 */
import assert from "node:assert/strict";
import { withTempDir } from "./helpers/temp_dir.ts";
import { missingTool } from "./helpers/tools.ts";

const ROOT = new URL("../", import.meta.url).pathname;

const missing = await missingTool("nvcc", "cmake");
if (missing) console.warn(`prebuild_test: skipped: ${missing}`);

async function sh(script: string, cwd: string) {
  const o = await new Deno.Command("bash", { args: ["-c", script], cwd }).output();
  const text = new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr);
  return { code: o.code, text };
}

Deno.test({
  name: "prebuild.sh: a CUDA build made without cuBLAS or a GPU, taken only for the same csrc",
  ignore: missing !== null,
}, async () => {
  // a peer commit's build (prebuild_peer.sh) is left where it is: a stand-in unless one is there
  const peer = `${ROOT}.gpu-build/peer.tar.xz`;
  const hadPeer = await Deno.stat(peer).then(() => true, () => false);
  if (!hadPeer) {
    await Deno.mkdir(`${ROOT}.gpu-build`, { recursive: true });
    await Deno.writeTextFile(peer, "stand-in");
  }
  const peerBefore = await Deno.readFile(peer);
  const built = await sh("OUT=$(mktemp -d) bash tools/device/prebuild.sh", ROOT);
  try {
    assert.deepEqual(await Deno.readFile(peer), peerBefore, "the peer's build kept");
  } finally {
    if (!hadPeer) await Deno.remove(peer).catch(() => {});
  }
  assert.equal(built.code, 0, built.text);
  assert.match(built.text, /prebuilt: \.gpu-build\/prebuilt\.tar\.xz/);
  const list = await sh("tar -tJf .gpu-build/prebuilt.tar.xz", ROOT);
  for (const f of ["libmambabyte.so", "cuda_vs_cpu", "cuda_bench", "CSRC_DIGEST"]) {
    assert.match(list.text, new RegExp(`^\\./${f}$`, "m"), f);
  }
  await withTempDir("mb-prebuild-", async (dir) => {
    // the GPU machine's side, in a copy: csrc, lib.sh and the archive
    const copy = await sh(
      `mkdir -p tools/device .gpu-build && cp -r "${ROOT}csrc" . && ` +
        `cp "${ROOT}tools/device/lib.sh" tools/device/ && ` +
        `cp "${ROOT}.gpu-build/prebuilt.tar.xz" .gpu-build/`,
      dir,
    );
    assert.equal(copy.code, 0, copy.text);
    const use = await sh(
      "OUT=. . tools/device/lib.sh; use_prebuilt && CUDA_VISIBLE_DEVICES= ./build-cuda/cuda_vs_cpu",
      dir,
    );
    assert.equal(use.code, 0, use.text);
    assert.match(use.text, /prebuilt: build-cuda from/);
    // CUDA is in the library (else: "library built without CUDA"); this machine has no GPU
    assert.match(use.text, /SKIP: no CUDA device/);
    const changed = await sh(
      "echo >> csrc/api.c; OUT=. . tools/device/lib.sh; use_prebuilt; echo rc=$?",
      dir,
    );
    assert.match(changed.text, /csrc changed since it was built; building here/);
    assert.match(changed.text, /rc=1/);
  });
});

Deno.test("tree_ab.sh: without a peer's build, one line naming the script that makes it", async () => {
  await withTempDir("mb-tree-ab-", async (dir) => {
    const copy = await sh(
      `mkdir -p tools/device && cp "${ROOT}tools/device/tree_ab.sh" "${ROOT}tools/device/lib.sh" ` +
        "tools/device/",
      dir,
    );
    assert.equal(copy.code, 0, copy.text);
    const run = await sh("OUT=$PWD/out bash tools/device/tree_ab.sh", dir);
    assert.equal(run.code, 2, run.text);
    assert.equal(
      run.text.trim(),
      "no peer build (.gpu-build/peer.tar.xz: run tools/device/prebuild_peer.sh here first)",
    );
  });
});

Deno.test("lib.sh's with_env: a setting for one call, the variable's earlier state restored", async () => {
  // extract_gap.sh's SWITCHES run the same functions under each setting in turn, so a setting
  // that leaked into the next run would make an A/B compare a setting with itself
  const script = `OUT=. . "${ROOT}tools/device/lib.sh"
show() { echo "in:\${MB_T:-unset}"; fail; }
with_env MB_T=1 show
echo "after:\${MB_T:-unset} status:\${status:-0}"
export MB_T=keep
with_env MB_T=2 show
echo "after:$MB_T"
with_env MB_T=3 bash -c 'echo "child:$MB_T"'`;
  const run = await sh(script, ROOT);
  assert.equal(run.code, 0, run.text);
  assert.equal(
    run.text.trim(),
    ["in:1", "after:unset status:1", "in:2", "after:keep", "child:3"].join("\n"),
  );
});
