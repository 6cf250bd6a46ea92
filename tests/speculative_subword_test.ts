/**
 * The subword drafter: a transformers-format Mamba with its byte-level BPE tokenizer.json
 * (tests/fixtures/subword_drafter, a tiny CPU-trained fixture: tools/train/README.md), run by our
 * model code over its whole vocabulary: its logits equal the training code's (PyTorch), its tokens
 * spell exact bytes, and speculative generation with it returns plain generation's bytes.
 */
import assert from "node:assert/strict";
import { loadDraftModel, loadModel } from "../mod.ts";
import { SubwordTokenizer } from "../src/generate/tokenizer.ts";
import { runPythonJson, skipWithoutPython } from "./helpers/python.ts";
import { runScript } from "./helpers/scripts.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const CONFIG = `${ROOT}configs/mambabyte_lm.yml`;
const DRAFTER = `${ROOT}tests/fixtures/subword_drafter`;
const noTorch = await skipWithoutPython(["torch", "numpy"]);

Deno.test("subword tokenizer: token bytes, partial UTF-8, the best extension", async () => {
  const tok = await SubwordTokenizer.load(`${DRAFTER}/tokenizer.json`);
  assert.equal(tok.vocabSize, 703);
  const text = new TextEncoder().encode("ROMEO:\nWhat say'st thou, my dear nurse? — ünï\n");
  const { ids, rest } = tok.encodeBytes(text);
  assert.equal(rest.length, 0);
  const spelled = ids.flatMap((id) => [...tok.tokenBytes(id)]);
  assert.deepEqual(Uint8Array.from(spelled), text, "the tokens spell the bytes");
  assert.ok(ids.length < text.length * 0.8, "merges are used");
  // An incomplete character at the end stays out of the encoding.
  const cut = text.subarray(0, text.length - 2); // inside "ï"
  const r = tok.encodeBytes(cut);
  assert.equal(r.rest.length, 1);
  assert.deepEqual(
    Uint8Array.from(r.ids.flatMap((id) => [...tok.tokenBytes(id)])),
    cut.subarray(0, cut.length - 1),
  );
  // bestExtension picks the best-scored token that starts with the prefix.
  const logits = new Float32Array(tok.vocabSize);
  const prefix = new TextEncoder().encode(" th");
  const ext = [...Array(tok.vocabSize).keys()].filter((id) => {
    const b = tok.tokenBytes(id);
    return b.length >= 3 && b[0] === 32 && b[1] === 116 && b[2] === 104;
  });
  assert.ok(ext.length > 1);
  logits[ext.at(-1)!] = 5;
  assert.equal(tok.bestExtension(logits, prefix), ext.at(-1));
  assert.equal(tok.bestExtension(logits, Uint8Array.of(0xff, 0xfe)), undefined);
});

Deno.test("subword tokenizer: a file that is not JSON is one printable error line", async () => {
  // V8's JSON.parse message quotes the text it failed on, new lines and escapes included
  const file = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(file, "x\u0001\u001b[2J\nsecond line");
    await assert.rejects(
      () => SubwordTokenizer.load(file),
      (e: Error) => /^cannot read the tokenizer .*: [\x20-\x7e]+$/.test(e.message),
    );
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("subword tokenizer: hostile token ids are one clear error, before any table is built", async () => {
  // Found by tests/fuzz: an id of 2e9 had the tokenizers library's get_vocab run for minutes, one
  // of 1e12 in added_tokens threw a RangeError, a string id a TypeError.
  const base = JSON.parse(await Deno.readTextFile(`${DRAFTER}/tokenizer.json`));
  const file = await Deno.makeTempFile({ suffix: ".json" });
  try {
    const cases: [(d: Record<string, unknown>) => void, RegExp][] = [
      [
        (d) => void ((d.model as { vocab: Record<string, unknown> }).vocab.a = 2e9),
        /token id 2000000000 is not in 0\.\.\d+/,
      ],
      [
        (d) => void (d.added_tokens = [{ id: 1e12, content: "<x>" }]),
        /token id 1000000000000 is not in/,
      ],
      [
        (d) => void ((d.model as { vocab: Record<string, unknown> }).vocab.a = "7"),
        /token id 7 is not in/,
      ],
      [(d) => void (d.added_tokens = { id: 1 }), /added_tokens is not a list/],
    ];
    for (const [mutate, pattern] of cases) {
      const doc = structuredClone(base);
      mutate(doc);
      await Deno.writeTextFile(file, JSON.stringify(doc));
      const t0 = performance.now();
      await assert.rejects(
        () => SubwordTokenizer.load(file),
        (e: Error) => pattern.test(e.message),
      );
      assert.ok(performance.now() - t0 < 5000, `took ${performance.now() - t0} ms`);
    }
    await Deno.writeTextFile(file, "5");
    await assert.rejects(() => SubwordTokenizer.load(file), /its JSON is not an object/);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("subword tokenizer: two tokens sharing an id leave the id without one spelling nothing", async () => {
  // Found by tests/fuzz: the tokenizers library's get_vocab listed the id no token had left with an
  // undefined token, and the byte table's loop threw a TypeError.
  const base = JSON.parse(await Deno.readTextFile(`${DRAFTER}/tokenizer.json`));
  const vocab = (base.model as { vocab: Record<string, number> }).vocab;
  const [first, second] = Object.keys(vocab).filter((k) => k.length === 1).slice(-2);
  const freed = vocab[second];
  vocab[second] = vocab[first];
  const file = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(file, JSON.stringify(base));
    const tok = await SubwordTokenizer.load(file);
    assert.equal(tok.tokenBytes(freed).length, 0);
    assert.ok(tok.tokenBytes(vocab[first]).length > 0);
    const text = new TextEncoder().encode("the cat");
    const r = tok.encodeBytes(text);
    assert.ok(r.ids.length > 0);
  } finally {
    await Deno.remove(file);
  }
});

Deno.test({
  name: "the subword drafter's logits (our model code, 703 tokens) equal the training code's",
  ignore: noTorch,
}, async () => {
  const draft = await loadDraftModel({ checkpoint: DRAFTER, device: "cpu" });
  try {
    assert.equal(draft.kind, "subword");
    assert.equal(draft.model.vocabOut, 703);
    const ids = Int32Array.from({ length: 40 }, (_, i) => (i * 37 + 5) % 703);
    const V = 703;
    const ours = new Float32Array(ids.length * V);
    const st = await draft.model.forwardChunks(ids, {
      onLogits: (start, l) => ours.set(l, start * V),
    });
    st.free();
    const ref = await runPythonJson(
      `
import json, sys, torch
sys.path.insert(0, sys.argv[1] + "/tools/train")
from safetensors.torch import load_file
from train import MambaLM, ModelArgs
cfg = json.load(open(sys.argv[2] + "/config.json"))
a = ModelArgs(d_model=cfg["hidden_size"], n_layer=cfg["num_hidden_layers"], vocab_size=cfg["vocab_size"],
              norm="rmsnorm", tie=cfg["tie_word_embeddings"])
m = MambaLM(a).double().eval()
sd = {k.replace("backbone.embeddings.", "backbone.embedding."): v.double()
      for k, v in load_file(sys.argv[2] + "/model.safetensors").items()}
m.load_state_dict(sd, strict=False)
ids = torch.tensor([json.loads(sys.argv[3])])
with torch.no_grad():
    print(json.dumps(m(ids)[0].flatten().tolist()))
`.replace("from safetensors.torch import load_file", SAFETENSORS_SHIM),
      [ROOT, DRAFTER, JSON.stringify([...ids])],
    ) as number[];
    let worst = 0, scale = 0;
    for (let i = 0; i < ref.length; i++) {
      worst = Math.max(worst, Math.abs(ours[i] - ref[i]));
      scale = Math.max(scale, Math.abs(ref[i]));
    }
    assert.ok(worst / scale < 1e-4, `relative error ${worst / scale}`);
  } finally {
    draft.close();
  }
});

/** safetensors without the safetensors package (Debian's Python may lack it). */
const SAFETENSORS_SHIM = `
import struct, numpy as np
def load_file(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        a = np.frombuffer(b[8 + n + s:8 + n + e], dtype={"F32": np.float32}[v["dtype"]]).reshape(v["shape"])
        out[k] = torch.from_numpy(a.copy())
    return out
`;

Deno.test("speculative generation with the subword drafter returns plain generation's bytes", async () => {
  const small = await loadModel({ configPath: CONFIG, modelId: "small", device: "cpu" });
  const draft = await loadDraftModel({ checkpoint: DRAFTER, device: "cpu" });
  try {
    const enc = (p: string) => new TextEncoder().encode(p);
    const cases: [Uint8Array, Record<string, number>, number][] = [
      [enc("KING RICHARD III:\nNow is the winter of our discontent\n"), { topK: 1 }, 6],
      [
        enc("KING RICHARD III:\nNow is the winter of our discontent\n"),
        { topK: 256, topP: 0.98 },
        11,
      ],
      [enc("Señor — naïve ünïcödé "), { topK: 30, temperature: 0.6 }, 6],
      [enc(""), { topK: 1 }, 9],
    ];
    let accepted = 0;
    for (const [prompt, s, length] of cases) {
      const o = { maxNewTokens: 90, seed: 99, ...s };
      const [plain] = await small.generate(prompt, o);
      const [spec] = await small.generate(prompt, {
        ...o,
        draft: {
          model: draft,
          length,
          onStats: (st) => {
            assert.equal(st.drafter, "subword");
            accepted += st.accepted;
          },
        },
      });
      assert.deepEqual(spec, plain, `${JSON.stringify(s)} k=${length}`);
    }
    assert.ok(accepted > 0, "the subword drafter's bytes are accepted sometimes");
  } finally {
    draft.close();
    small.close();
  }
});

Deno.test("generate.ts with the subword drafter prints plain decoding's bytes", async () => {
  const base = ["--model_id", "tiny", "--device", "cpu", "--quiet", "--prompt", "MENENIUS:\n"];
  const flags = ["--max_new_tokens", "80", "--top_k", "1"];
  const plain = await runScript("generate.ts", [...base, ...flags]);
  assert.equal(plain.code, 0, plain.stderr);
  for (
    const extra of [
      ["--draft_pretrained_model_filepath", DRAFTER],
      [
        "--draft_pretrained_model_filepath",
        DRAFTER,
        "--draft_tokenizer",
        `${DRAFTER}/tokenizer.json`,
      ],
    ]
  ) {
    const r = await runScript("generate.ts", [...base, ...flags, ...extra, "--verbose"]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdoutBytes, plain.stdoutBytes);
    assert.match(r.stderr, /speculative decoding \(subword drafter/);
  }
});
