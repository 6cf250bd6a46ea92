// readFileLimited: small user files are checked with stat before they are opened (a FIFO would
// block the open forever, /dev/zero would never end) and refused above their cap before any read.

import assert from "node:assert/strict";
import { join } from "node:path";
import { UserError } from "../src/cli/errors.ts";
import { MAX_PROMPT_FILE_BYTES, resolvePrompt } from "../src/cli/prompt.ts";
import { MambaByteError } from "../src/errors.ts";
import { InputFileError, readFileLimited, readTextFileLimited } from "../src/io/read_limited.ts";
import { runScript } from "./helpers/scripts.ts";
import { withTempDir } from "./helpers/temp_dir.ts";

function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  return withTempDir("mambabyte_limited_", fn);
}

async function mkfifo(path: string): Promise<void> {
  assert.ok((await new Deno.Command("mkfifo", { args: [path] }).output()).success);
}

async function failure(p: Promise<unknown>): Promise<InputFileError> {
  const e = await p.then(() => null, (err) => err);
  assert.ok(e instanceof InputFileError, `expected an InputFileError, got ${e}`);
  assert.ok(e instanceof MambaByteError);
  assert.ok(!e.message.includes("\n"));
  return e;
}

Deno.test("readFileLimited: reads a regular file under the cap", async () => {
  await withDir(async (dir) => {
    const p = join(dir, "a.txt");
    await Deno.writeTextFile(p, "\ufeffhé");
    const want = [0xef, 0xbb, 0xbf, 0x68, 0xc3, 0xa9];
    assert.deepEqual([...await readFileLimited(p, 6, "text file")], want);
    assert.equal(await readTextFileLimited(p, 6, "text file"), "\ufeffhé");
    await Deno.writeFile(p, new Uint8Array());
    assert.equal((await readFileLimited(p, 0, "text file")).length, 0);
  });
});

Deno.test("readFileLimited: missing, too large, directory, FIFO, device: one clear line each", async () => {
  await withDir(async (dir) => {
    let e = await failure(readFileLimited(join(dir, "nope"), 10, "prompt file"));
    assert.equal(e.message, `prompt file not found: ${dir}/nope`);
    assert.equal(e.reason, "missing");
    const big = join(dir, "big");
    await Deno.writeFile(big, new Uint8Array(11));
    e = await failure(readFileLimited(big, 10, "config.json"));
    assert.equal(e.message, `config.json ${big} is 11 bytes, over the 10 bytes limit`);
    assert.equal(e.reason, "too-large");
    await Deno.truncate(big, 3 << 20);
    e = await failure(readFileLimited(big, 1 << 20, "index"));
    assert.match(e.message, /is 3145728 bytes, over the 1 MiB limit$/);
    e = await failure(readFileLimited(dir, 10, "text file"));
    assert.equal(e.message, `text file ${dir} is a directory, not a regular file`);
    assert.equal(e.reason, "not-file");
    e = await failure(readFileLimited("/dev/zero", 10, "text file"));
    assert.equal(e.message, "text file /dev/zero is a character device, not a regular file");
    const fifo = join(dir, "fifo");
    await mkfifo(fifo);
    const t0 = performance.now();
    e = await failure(readFileLimited(fifo, 10, "text file"));
    assert.equal(e.message, `text file ${fifo} is a FIFO, not a regular file`);
    assert.ok(performance.now() - t0 < 2000);
    // A caller's own error class.
    const own = await readFileLimited(fifo, 10, "prompt file", {
      makeError: (m) => new UserError(m),
    }).then(() => null, (x) => x);
    assert.ok(own instanceof UserError && /is a FIFO/.test(own.message));
  });
});

Deno.test(`--prompt_file: larger than ${MAX_PROMPT_FILE_BYTES} bytes or a FIFO is refused`, async () => {
  assert.equal(MAX_PROMPT_FILE_BYTES, 64 << 20);
  await withDir(async (dir) => {
    const p = join(dir, "prompt.txt");
    await Deno.writeTextFile(p, "x");
    await Deno.truncate(p, MAX_PROMPT_FILE_BYTES + 1); // sparse
    await assert.rejects(
      resolvePrompt({ prompt_file: p }),
      (e: Error) =>
        e instanceof UserError &&
        e.message ===
          `prompt file ${p} is ${MAX_PROMPT_FILE_BYTES + 1} bytes, over the 64 MiB limit`,
    );
    const fifo = join(dir, "fifo");
    await mkfifo(fifo);
    await assert.rejects(
      resolvePrompt({ prompt_file: fifo }),
      (e: Error) => e instanceof UserError && /is a FIFO, not a regular file$/.test(e.message),
    );
  });
});

Deno.test("evaluate.ts: a FIFO as a text file is one error line, not a hang", async () => {
  await withDir(async (dir) => {
    const fifo = join(dir, "text.txt");
    await mkfifo(fifo);
    const r = await runScript("evaluate.ts", ["--model_id", "tiny", "--text_files", fifo]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr.trim(), `error: text file ${fifo} is a FIFO, not a regular file`);
  });
});
