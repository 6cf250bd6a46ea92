/**
 * The changes waiting for a GPU (tools/device/pending/*.patch, compile-checked but not yet run on
 * one) still apply to the tree: a later edit of the same lines would otherwise break them unseen.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;
const DIR = `${ROOT}tools/device/pending`;

const patches: string[] = [];
for await (const e of Deno.readDir(DIR)) {
  if (e.isFile && e.name.endsWith(".patch")) patches.push(e.name);
}
patches.sort();
const git = await new Deno.Command("git", { args: ["-C", ROOT, "rev-parse", "--git-dir"] })
  .output().then((o) => o.success).catch(() => false);
if (!git) console.warn("pending_patches_test: not a git checkout (or no git); skipped");

for (const name of patches) {
  Deno.test({
    name: `pending patch ${name} applies to the tree`,
    ignore: !git,
    async fn() {
      const out = await new Deno.Command("git", {
        args: ["-C", ROOT, "apply", "--check", `${DIR}/${name}`],
        stderr: "piped",
      }).output();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
    },
  });
}
