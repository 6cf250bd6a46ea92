/**
 * Token ids of Tiny Shakespeare's three byte ranges for train.py's --token_files, tokenized by the
 * toolkit's own tokenizer code (@huggingface/tokenizers): how the CPU test fixture of a subword
 * drafter is trained where Python has no tokenizers library (tools/train/README.md).
 *
 *   deno run -A tools/train/fixture_tokens.ts <tinyshakespeare.txt> <tokenizer.json> <prefix>
 *
 * Writes <prefix>.{train,select,heldout}.i32: bytes [0, 0.93 n), [0.93 n, 0.95 n), [0.95 n, n).
 */
import { SubwordTokenizer } from "../../src/generate/tokenizer.ts";

const [data, tokenizer, prefix] = Deno.args;
if (!prefix) throw new Error("usage: fixture_tokens.ts <text> <tokenizer.json> <prefix>");
const tok = await SubwordTokenizer.load(tokenizer);
const raw = await Deno.readFile(data);
const n = raw.length, sel = Math.floor(n * 0.93), split = Math.floor(n * 0.95);
const parts: [string, Uint8Array][] = [
  ["train", raw.subarray(0, sel)],
  ["select", raw.subarray(sel, split)],
  ["heldout", raw.subarray(split)],
];
for (const [name, bytes] of parts) {
  const { ids } = tok.encodeBytes(bytes);
  await Deno.writeFile(`${prefix}.${name}.i32`, new Uint8Array(Int32Array.from(ids).buffer));
  console.log(`${name}: ${bytes.length} bytes -> ${ids.length} tokens`);
}
