/**
 * generate.ts with a drafter: the printed bytes equal plain decoding's, statistics on stderr with
 * --verbose and in the stored record, and every drafter flag checked before anything loads.
 */
import assert from "node:assert/strict";
import { runPythonJson, skipWithoutPython } from "./helpers/python.ts";
import { runScript } from "./helpers/scripts.ts";

const BASE = ["--device", "cpu", "--quiet", "--prompt", "JULIET:\n", "--max_new_tokens", "120"];

Deno.test("generate.ts --draft_model_id prints plain decoding's bytes (greedy and sampled)", async () => {
  for (const sampling of [["--top_k", "1"], ["--top_k", "50", "--temperature", "0.8"]]) {
    const plain = await runScript("generate.ts", ["--model_id", "small", ...BASE, ...sampling]);
    assert.equal(plain.code, 0, plain.stderr);
    // rounds on the device (the default, also on the CPU) and through the host
    for (
      const [env, rounds] of [[{}, "on the device"], [
        { MAMBABYTE_SPEC_ROUNDS: "host" },
        "through the host",
      ]] as const
    ) {
      const spec = await runScript("generate.ts", [
        "--model_id",
        "small",
        ...BASE,
        ...sampling,
        "--draft_model_id",
        "tiny",
        "--draft_length",
        "5",
        "--verbose",
      ], { env });
      assert.equal(spec.code, 0, spec.stderr);
      assert.deepEqual(spec.stdoutBytes, plain.stdoutBytes);
      assert.match(
        spec.stderr,
        new RegExp(
          `speculative decoding \\(bytes drafter 'tiny', k=5\\): 120 bytes in \\d+ verification passes, acceptance rate [\\d.]+ \\(\\d+/\\d+\\), mean accepted length [\\d.]+, [\\d.]+ bytes/s after the first byte, rounds ${rounds}`,
        ),
      );
    }
  }
});

const noPython = await skipWithoutPython(["msgpack"]);

Deno.test({
  name: "generate.ts stores the speculative statistics",
  ignore: noPython,
}, async () => {
  const dir = await Deno.makeTempDir();
  try {
    const out = `${dir}/gen.msgpack`;
    const r = await runScript("generate.ts", [
      "--model_id",
      "small",
      ...BASE,
      "--draft_pretrained_model_filepath",
      "pretrained_models/tiny.safetensors",
      "--filepath_to_store_outputs",
      out,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const rec = await runPythonJson(
      `
import msgpack, json, sys
r = msgpack.unpackb(open(sys.argv[1], "rb").read(), strict_map_key=False)
print(json.dumps({k: r[k] for k in ("drafter", "draft_length", "verification_rounds", "device_rounds", "drafted_bytes",
  "accepted_bytes", "acceptance_rate", "mean_accepted_length", "bytes_per_second", "draft_model_id",
  "draft_pretrained_model_filepath", "draft_tokenizer")}))
`,
      [out],
    ) as Record<string, number | string | null>;
    assert.equal(rec.drafter, "bytes");
    assert.equal(rec.draft_length, 7);
    assert.equal(rec.draft_model_id, "tiny");
    assert.equal(rec.draft_pretrained_model_filepath, "pretrained_models/tiny.safetensors");
    assert.equal(rec.draft_tokenizer, null);
    assert.equal(rec.device_rounds, true, "the CPU's rounds run on the device by default");
    const n = (k: string) => rec[k] as number;
    assert.ok(n("accepted_bytes") <= n("drafted_bytes") && n("verification_rounds") > 0);
    assert.equal(n("acceptance_rate"), n("accepted_bytes") / n("drafted_bytes"));
    assert.ok(n("bytes_per_second") > 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("generate.ts checks the drafter flags before loading anything", async () => {
  const cases: [string[], RegExp, number][] = [
    [["--draft_length", "3"], /--draft_length: needs a drafter/, 2],
    [["--draft_tokenizer", "x.json"], /--draft_tokenizer: needs a drafter/, 2],
    [["--draft_model_id", "nope"], /--draft_model_id: invalid choice: 'nope'/, 2],
    [["--draft_model_id", "tiny", "--draft_length", "0"], /from 1 to 64 \(got 0\)/, 2],
    [["--draft_model_id", "tiny", "--draft_length", "65"], /from 1 to 64 \(got 65\)/, 2],
    [["--draft_model_id", "tiny", "--num_samples", "2"], /draws one sample/, 2],
    [["--draft_model_id", "test-48x2"], /has no checkpoint/, 2],
    [
      ["--draft_model_id", "tiny", "--draft_tokenizer", "/nonexistent/tok.json"],
      /tokenizer not found/,
      1,
    ],
  ];
  for (const [flags, pattern, code] of cases) {
    const r = await runScript("generate.ts", ["--prompt", "x", "--device", "cpu", ...flags]);
    assert.equal(r.code, code, `${flags.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, pattern);
    assert.equal(r.stdout, "", "nothing printed before the check");
  }
});
