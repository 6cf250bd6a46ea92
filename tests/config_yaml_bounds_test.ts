// YAML configs under hostile input: npm:yaml checks duplicate keys pairwise and spends ~100 us a
// key, so a 4 MB document of flat keys took over a minute (found by tests/fuzz); documents are now
// capped and duplicate keys found in linear time, each a one-line ConfigError.

import assert from "node:assert/strict";
import { ConfigError, parseConfig } from "../src/config/config.ts";
import { MAX_CONFIG_BYTES, parseYaml } from "../src/config/yaml.ts";

function configError(text: string): ConfigError {
  try {
    parseConfig(text, "c.yml");
  } catch (e) {
    assert.ok(e instanceof ConfigError, String(e));
    assert.ok(!e.message.includes("\n"), e.message);
    return e;
  }
  assert.fail("no error");
}

Deno.test("yaml: a document over the cap is refused before parsing", () => {
  assert.equal(MAX_CONFIG_BYTES, 256 << 10);
  const keys = Array.from({ length: 100_000 }, (_, i) => `  m${i}: 8`).join("\n");
  const t0 = performance.now();
  const e = configError(`model:\n${keys}\n`);
  assert.ok(performance.now() - t0 < 1000, `took ${performance.now() - t0} ms`);
  assert.match(
    e.message,
    /^c\.yml: invalid YAML: document of \d+ characters is over the 256 KiB limit$/,
  );
});

Deno.test("yaml: many keys under the cap parse in linear time", () => {
  // 20k flat keys (~220 KB) took 7 s with the pairwise duplicate check.
  const keys = Array.from({ length: 20_000 }, (_, i) => `  m${i}: 8`).join("\n");
  const t0 = performance.now();
  const doc = parseYaml(`x:\n${keys}\n`) as { x: Record<string, number> };
  assert.equal(Object.keys(doc.x).length, 20_000);
  assert.ok(performance.now() - t0 < 5000, `took ${performance.now() - t0} ms`);
});

Deno.test("yaml: duplicate keys, also after conversion to property names, are refused", () => {
  for (
    const [text, key] of [["a: 1\na: 2\n", "a"], ["a: {b: 1, b: 2}\n", "b"], [
      "1: x\n'1': y\n",
      "1",
    ]]
  ) {
    assert.throws(() => parseYaml(text), new RegExp(`duplicate key "${key}"`));
  }
  assert.match(
    configError("model:\n  tiny: {d_model: 8}\n  tiny: {d_model: 9}\n").message,
    /^c\.yml: invalid YAML: duplicate key "tiny"$/,
  );
  assert.deepEqual(parseYaml("a: &x [1]\nb: *x\n"), { a: [1], b: [1] });
});

Deno.test("yaml: mapping keys with control characters or over 256 characters are refused", () => {
  // Found by tests/fuzz: config messages repeat keys ("model.<id> must be a mapping").
  assert.match(
    configError('model:\n  "a\\u0000\\u001b[2J": 5\n').message,
    /^c\.yml: invalid YAML: a mapping key holds control characters$/,
  );
  assert.match(
    configError(`model:\n  ${"k".repeat(300)}: 5\n`).message,
    /a mapping key is longer than 256 characters$/,
  );
  assert.deepEqual(parseYaml("model:\n  972M: {d_model: 1792}\n"), {
    model: { "972M": { d_model: 1792 } },
  });
});

Deno.test("yaml: string values with control characters other than line breaks and tabs are refused", () => {
  // Found by tests/fuzz: "default_model_id '<value>' is not a model id" printed them raw.
  assert.match(
    configError('model:\n  default_model_id: "fu\\u0011zz\\u007f"\n  fuzz: {d_model: 8}\n').message,
    /^c\.yml: invalid YAML: a string value holds control characters$/,
  );
  assert.deepEqual(parseYaml("p: |\n  two\n  \tlines\n"), { p: "two\n\tlines\n" });
});

Deno.test("yaml: a parser message that quotes the file's bytes is made printable", () => {
  // Found by tests/fuzz: npm:yaml's message for a bad block scalar header repeats the header's
  // bytes, control characters and all.
  const e = configError("a: >\u0001\u001b[2J\u00ff\n  x\n");
  assert.match(e.message, /^c\.yml: invalid YAML: [\x20-\x7e]+$/);
  assert.ok(e.message.length < 300, e.message);
});
