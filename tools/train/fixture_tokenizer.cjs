// A small byte-level BPE tokenizer.json for the CPU test fixture, trained by the Hugging Face
// tokenizers library (its Node binding, npm `tokenizers`, the same Rust code as the Python one;
// the GPU job trains its tokenizers with the Python binding, tools/train/train.py).
//
//   npm install tokenizers@0.23.2 && node tools/train/fixture_tokenizer.cjs train.txt 512 out.json
//
// The Node binding trains with the default trainer only (no vocabulary size, no initial alphabet),
// so this keeps the first merges: BPE training is greedy, so the first (V - alphabet) merges and
// their tokens are exactly what a trainer stopping at V tokens would have learned. Bytes the text
// lacks are then appended to the vocabulary (single characters need no merges), so every byte
// has a token.
const fs = require("fs");
const t = require("tokenizers");
const [, , data, vocabArg, out] = process.argv;
const V = Number(vocabArg);
const tk = new t.Tokenizer(t.BPE.empty());
tk.setPreTokenizer(t.byteLevelPreTokenizer(false, true));
tk.train([data]);
const tmp = out + ".full.json";
tk.save(tmp);
const j = JSON.parse(fs.readFileSync(tmp, "utf8"));
fs.unlinkSync(tmp);
const vocab = j.model.vocab;
const merges = j.model.merges;
const alphabet = Object.values(vocab).length - merges.length;
const keep = V - alphabet;
const kept = {};
for (const [tok, id] of Object.entries(vocab)) if (id < V) kept[tok] = id;
j.model.merges = merges.slice(0, keep);
// GPT-2's byte -> character table: every byte's character is in the vocabulary
const bs = [];
for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
for (let b = 0xae; b <= 0xff; b++) bs.push(b);
const cs = [...bs];
let n = 0;
for (let b = 0; b < 256; b++) {
  if (!bs.includes(b)) {
    bs.push(b);
    cs.push(256 + n++);
  }
}
let next = V;
for (const c of cs) {
  const ch = String.fromCodePoint(c);
  if (!(ch in kept)) kept[ch] = next++;
}
j.model.vocab = kept;
j.decoder = { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true };
fs.writeFileSync(out, JSON.stringify(j));
console.log(`alphabet ${alphabet}, merges kept ${keep}, vocabulary ${next}`);
