// Outputs over 4 GiB (pickle BINBYTES8, streamed writes). Opt-in: needs ~14 GB of RAM and disk.
// Run with MAMBABYTE_BIG_TESTS=1.

import assert from "node:assert/strict";
import { uint8, writeOutputs } from "../src/io/mod.ts";
import { runPythonJson, skipWithoutPython } from "./helpers/python.ts";

const wanted = Deno.env.get("MAMBABYTE_BIG_TESTS") === "1";
if (!wanted) console.warn("skipping >4 GiB output tests: set MAMBABYTE_BIG_TESTS=1 to run them");
const ignore = !wanted || await skipWithoutPython(["numpy"]);

Deno.test({
  name: "pickle: a 4.1 GiB tensor is written (BINBYTES8) and loads in numpy",
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "mambabyte_io_big_" });
    try {
      const n = 2 ** 32 + 4097;
      const data = new Uint8Array(n);
      for (let i = 0; i < n; i += 4096) data[i] = (i / 4096) & 0xff;
      data[n - 1] = 77;
      const path = `${dir}/big.pkl`;
      await writeOutputs(path, { t: uint8([n], data), after: "tail" });
      const got = await runPythonJson(
        `
import json, pickle, pickletools, sys
with open(sys.argv[1], "rb") as f:
    o = pickle.load(f)
t = o["t"]
json.dump({"n": int(t.shape[0]), "last": int(t[-1]), "k": int(t[4096 * 300]),
           "after": o["after"], "w": bool(t.flags.writeable)}, sys.stdout)
`,
        [path],
      );
      assert.deepEqual(got, { n, last: 77, k: 300 & 0xff, after: "tail", w: true });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
