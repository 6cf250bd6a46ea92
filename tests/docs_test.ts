/**
 * The docs tell the truth about the code: the README's table of environment variables lists every
 * variable the code reads, the versions it states match CMakeLists.txt and .ci/run, the design
 * document it and the header cite exists, and no doc or comment carries a work log ("session 3").
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url).pathname;
const README = await Deno.readTextFile(`${ROOT}README.md`);

/** Files under `dir` (relative to the root) whose names end with one of `exts`. */
async function files(dir: string, exts: string[]): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${ROOT}${dir}`)) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory && e.name !== "fixtures") out.push(...await files(path, exts));
    else if (e.isFile && exts.some((x) => e.name.endsWith(x))) out.push(path);
  }
  return out.sort();
}

const SOURCES = [
  "mod.ts",
  ...await files("src", [".ts"]),
  ...await files("scripts", [".ts"]),
  ...await files("tests", [".ts"]),
  ...await files("csrc", [".c", ".h", ".cu", ".cuh", ".def"]),
];

Deno.test("README's environment table lists every variable the code reads", async () => {
  const read = new Map<string, string>();
  const pattern = /(?:Deno\.env\.get|getenv|envValue|env_flag)\(\s*"([A-Z][A-Z0-9_]*)"/g;
  for (const f of SOURCES) {
    for (const m of (await Deno.readTextFile(`${ROOT}${f}`)).matchAll(pattern)) read.set(m[1], f);
  }
  assert.ok(
    read.has("MAMBABYTE_LIB") && read.has("MAMBABYTE_CUDA_PDL"),
    [...read.keys()].join(),
  );
  const table = README.slice(README.indexOf("### Environment variables"));
  const listed = new Set([...table.matchAll(/^\| `([A-Z][A-Z0-9_]*)/gm)].map((m) => m[1]));
  for (const [name, file] of read) {
    assert.ok(listed.has(name), `${name} (read in ${file}) is missing from README's table`);
  }
});

Deno.test("the versions the README states are the ones the build and CI use", async () => {
  const cmake = await Deno.readTextFile(`${ROOT}csrc/CMakeLists.txt`);
  const min = cmake.match(/cmake_minimum_required\(VERSION (\d+\.\d+(?:\.\d+)?)/)?.[1];
  assert.ok(min, "no cmake_minimum_required");
  assert.match(README, new RegExp(`CMake >= ${min.replaceAll(".", "\\.")}\\b`));
  const ci = await Deno.readTextFile(`${ROOT}.ci/run`);
  const deno = ci.match(/^DENO_VERSION=([0-9.]+)$/m)?.[1];
  assert.ok(deno, "no DENO_VERSION in .ci/run");
  assert.match(README, new RegExp(`Deno ${deno.replaceAll(".", "\\.")}\\b`));
  assert.match(README, /`deno task ok`/);
});

Deno.test("the design document the README and the header cite exists", async () => {
  const header = await Deno.readTextFile(`${ROOT}csrc/include/mambabyte.h`);
  for (const [who, text] of [["README.md", README], ["mambabyte.h", header]]) {
    assert.match(text, /docs\/DESIGN\.md/, `${who} does not cite docs/DESIGN.md`);
    for (const m of text.matchAll(/\b(docs\/[\w.]+\.md)\b/g)) {
      await Deno.stat(`${ROOT}${m[1]}`).catch(() => assert.fail(`${who} cites missing ${m[1]}`));
    }
  }
});

Deno.test("no doc or comment carries a work log or points outside the repository", async () => {
  const docs = ["README.md", ...await files("docs", [".md"])];
  for (const f of [...docs, ...SOURCES.filter((f) => !f.startsWith("tests/"))]) {
    const text = await Deno.readTextFile(`${ROOT}${f}`);
    const diary = text.match(/\bsessions? [0-9]+/i);
    assert.equal(diary, null, `${f}: '${diary?.[0]}' (say what is true now, not when)`);
    if (docs.includes(f)) assert.doesNotMatch(text, /\.\.\/shared/, `${f} mentions ../shared`);
  }
});
