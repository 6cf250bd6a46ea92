/**
 * mod.ts imported by URL from outside the project (no deno.json of ours in effect): the repository
 * is served over HTTP on the loopback and a probe script, run with --no-config, loads the bundled
 * tiny model through that URL and generates with it.
 */
import assert from "node:assert/strict";
import { findLibrary } from "../src/native/lib.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const LIB = findLibrary() ?? `${ROOT}build/libmambabyte.so`;

function contentType(path: string): string {
  if (path.endsWith(".ts")) return "application/typescript";
  if (path.endsWith(".json")) return "application/json";
  return "application/octet-stream";
}

Deno.test("mod.ts imported by URL loads the bundled model and generates", async () => {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    if (path.includes("..")) return new Response("bad path", { status: 400 });
    try {
      const body = await Deno.readFile(`${ROOT}${path.slice(1)}`);
      return new Response(body, { headers: { "content-type": contentType(path) } });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  const dir = await Deno.makeTempDir();
  try {
    const base = `http://127.0.0.1:${server.addr.port}`;
    await Deno.writeTextFile(
      `${dir}/probe.ts`,
      `import { loadModel } from "${base}/mod.ts";
const model = await loadModel({
  configPath: ${JSON.stringify(`${ROOT}configs/mambabyte_lm.yml`)},
  modelId: "tiny",
  device: "cpu",
});
const [out] = await model.generate(new TextEncoder().encode("ROMEO:"), { maxNewTokens: 24, topK: 1 });
model.close();
console.log(JSON.stringify({ n: out.length }));`,
    );
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-config", "--no-lock", `--reload=${base}`, `${dir}/probe.ts`],
      cwd: dir,
      env: { MAMBABYTE_LIB: LIB, NO_COLOR: "1" },
    }).output();
    const stdout = new TextDecoder().decode(out.stdout).trim();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `probe failed: ${stderr.split("\n").slice(-5).join("\n")}`);
    assert.deepEqual(JSON.parse(stdout.split("\n").at(-1)!), { n: 24 });
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
