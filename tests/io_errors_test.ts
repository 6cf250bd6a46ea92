// Failure paths of the output writers: the error is one clear OutputError and nothing is left
// behind (no temp file, no partial output, an existing file untouched).

import assert from "node:assert/strict";
import { float32, OutputError, writeOutputs } from "../src/io/mod.ts";
import { entryNames as names, withTempDir } from "./helpers/temp_dir.ts";

function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  return withTempDir("mambabyte_io_err_", fn);
}

const record = { x: float32([2], Float32Array.of(1, 2)), note: "hi" };

Deno.test("unsupported extension names the supported ones and writes nothing", async () => {
  await withDir(async (dir) => {
    for (const p of [`${dir}/out.json`, `${dir}/out`, `${dir}/.pkl`, `${dir}/out.pt`]) {
      await assert.rejects(writeOutputs(p, record), (e: Error) => {
        assert.ok(e instanceof OutputError);
        for (const ext of [".msgpack", ".pkl", ".pickle", ".safetensors"]) {
          assert.match(e.message, new RegExp(ext.replace(".", "\\.")));
        }
        return true;
      });
    }
    assert.deepEqual(names(dir), []);
  });
});

Deno.test("extension match is case-insensitive", async () => {
  await withDir(async (dir) => {
    await writeOutputs(`${dir}/OUT.PKL`, record);
    assert.deepEqual(names(dir), ["OUT.PKL"]);
  });
});

for (const ext of [".pkl", ".msgpack", ".safetensors"]) {
  Deno.test(`${ext}: a path under a regular file fails cleanly`, async () => {
    await withDir(async (dir) => {
      await Deno.writeTextFile(`${dir}/file`, "x");
      await assert.rejects(writeOutputs(`${dir}/file/out${ext}`, record), OutputError);
      await assert.rejects(writeOutputs(`${dir}/file/deeper/out${ext}`, record), OutputError);
      assert.deepEqual(names(dir), ["file"]);
    });
  });

  Deno.test(`${ext}: /proc is not writable`, async () => {
    await assert.rejects(writeOutputs(`/proc/mambabyte_no/out${ext}`, record), OutputError);
    await assert.rejects(writeOutputs(`/proc/out${ext}`, record), OutputError);
  });

  Deno.test(`${ext}: an unencodable value leaves no temp file and keeps the old file`, async () => {
    await withDir(async (dir) => {
      const path = `${dir}/out${ext}`;
      await Deno.writeTextFile(path, "previous");
      // A big tensor first so bytes have been written before the failure.
      const bad = {
        big: float32([1 << 18], new Float32Array(1 << 18)),
        later: { when: new Date(0) as unknown },
        tensor_later: new Map([[0, new Date(0) as unknown]]),
      };
      await assert.rejects(writeOutputs(path, bad), (e: Error) => {
        assert.ok(e instanceof OutputError, String(e));
        assert.match(e.message, /Date/);
        return true;
      });
      assert.equal(await Deno.readTextFile(path), "previous");
      assert.deepEqual(names(dir), [`out${ext}`]);
    });
  });

  Deno.test(`${ext}: a tensor whose shape disagrees with its data is rejected`, async () => {
    await withDir(async (dir) => {
      const bad = { t: { dtype: "float32", shape: [3], data: new Float32Array(2) } };
      await assert.rejects(writeOutputs(`${dir}/out${ext}`, bad), /shape \[3\]/);
      const wrongType = { t: { dtype: "float64", shape: [2], data: new Float32Array(2) } };
      await assert.rejects(writeOutputs(`${dir}/out${ext}`, wrongType), /Float64Array/);
      assert.deepEqual(names(dir), []);
    });
  });
}

Deno.test("msgpack: bigints beyond 64 bits are an error, not silently wrapped", async () => {
  await withDir(async (dir) => {
    await assert.rejects(writeOutputs(`${dir}/o.msgpack`, { n: 2n ** 64n }), /64 bits/);
    await assert.rejects(writeOutputs(`${dir}/o.msgpack`, { n: -(2n ** 63n) - 1n }), /64 bits/);
    assert.deepEqual(names(dir), []);
  });
});

Deno.test("safetensors: two values on one name is an error", async () => {
  await withDir(async (dir) => {
    const clash = {
      "a.0": float32([1], Float32Array.of(1)),
      a: new Map([[0, float32([1], Float32Array.of(2))]]),
    };
    await assert.rejects(writeOutputs(`${dir}/o.safetensors`, clash), /duplicate/);
    assert.deepEqual(names(dir), []);
  });
});

Deno.test("a record nested too deep, or cyclic, is one OutputError, not a stack overflow", async () => {
  // Found by tests/fuzz: safetensors metadata went through JSON.stringify and overflowed.
  await withDir(async (dir) => {
    let deep: unknown = 1;
    for (let i = 0; i < 5000; i++) deep = [deep];
    const cyclic: unknown[] = [];
    cyclic.push(new Map([[0, cyclic]]));
    for (const ext of [".pkl", ".msgpack", ".safetensors"]) {
      for (const rec of [{ deep }, { cyclic }]) {
        await assert.rejects(
          writeOutputs(`${dir}/out${ext}`, rec),
          (e: Error) => e instanceof OutputError && /nest deeper than 200 levels$/.test(e.message),
        );
      }
    }
    assert.deepEqual(names(dir), []);
  });
});
