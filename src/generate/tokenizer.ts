// deno-lint-ignore-file no-import-prefix -- see the tokenizers import below
/**
 * A subword drafter's tokenizer: a Hugging Face `tokenizer.json` run by the pure-JavaScript
 * `@huggingface/tokenizers` (no network, no native code), plus what drafting needs on top of it:
 * the bytes each token spells, and the best token that extends given bytes.
 *
 * Token bytes: for byte-level BPE (GPT-2's ByteLevel pre-tokenizer or decoder, what
 * tools/train/train.py trains) each character of a token maps back to one byte through GPT-2's
 * byte-to-character table, so every token has exact bytes, partial UTF-8 included. Other
 * tokenizers: the UTF-8 of the token decoded alone (exact for most; byte-fallback pieces are
 * approximated). Special (added) tokens spell no bytes and are never drafted.
 *
 * @module
 */

// Versioned inline: a project importing mod.ts by URL does not see our deno.json import map.
import { Tokenizer } from "npm:@huggingface/tokenizers@0.2.0";
import { MambaByteError, printable } from "../errors.ts";
import { readTextFileLimited } from "../io/read_limited.ts";

/** tokenizer.json files larger than this are refused (they hold vocabularies and merges). */
const MAX_TOKENIZER_BYTES = 64 << 20;

/** GPT-2's bytes_to_unicode(): byte -> the character byte-level BPE writes for it. */
function byteLevelTable(): Map<string, number> {
  const bs: number[] = [];
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
  const inv = new Map<string, number>();
  bs.forEach((b, i) => inv.set(String.fromCodePoint(cs[i]), b));
  return inv;
}

/** Length of the longest prefix of `bytes` that does not end inside a UTF-8 sequence. */
export function completeUtf8Length(bytes: Uint8Array): number {
  const n = bytes.length;
  // Look back at most 3 bytes for the start of the last sequence.
  for (let back = 1; back <= Math.min(4, n); back++) {
    const b = bytes[n - back];
    if ((b & 0xc0) === 0x80) continue; // a continuation byte
    const need = b < 0x80
      ? 1
      : (b & 0xe0) === 0xc0
      ? 2
      : (b & 0xf0) === 0xe0
      ? 3
      : (b & 0xf8) === 0xf0
      ? 4
      : 1;
    return back < need ? n - back : n;
  }
  return n;
}

/**
 * The added tokens' ids of a tokenizer.json, once every id it gives (the model's vocab map, the
 * added tokens) is checked to be a whole number below the count of tokens: ids index tables, and
 * a hostile id of 2e9 had the tokenizers library's get_vocab run for minutes (one of 1e12: a
 * RangeError).
 */
function checkedIds(json: unknown, file: string): Set<number> {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new MambaByteError(`${file} is not a tokenizer.json (its JSON is not an object)`);
  }
  const doc = json as Record<string, unknown>;
  const list = doc.added_tokens ?? [];
  if (!Array.isArray(list)) throw new MambaByteError(`${file}: added_tokens is not a list`);
  const added = new Set(list.map((a) => (a as { id?: unknown } | null)?.id as number));
  const vocab = (doc.model as { vocab?: unknown } | null)?.vocab;
  const ids = vocab && typeof vocab === "object" && !Array.isArray(vocab)
    ? Object.values(vocab as Record<string, unknown>)
    : [];
  const count = ids.length + added.size;
  for (const id of [...ids, ...added]) {
    if (!Number.isSafeInteger(id) || (id as number) < 0 || (id as number) >= count) {
      throw new MambaByteError(
        `${file}: token id ${printable(String(id), 40)} is not in 0..${count - 1} ` +
          `(the vocabulary's and added tokens' count)`,
      );
    }
  }
  return added;
}

/** A loaded tokenizer with the drafting helpers. */
export class SubwordTokenizer {
  /** Where it was read from. */
  readonly path: string;
  /** Token ids are 0..vocabSize-1. */
  readonly vocabSize: number;
  readonly #tk: Tokenizer;
  readonly #bytes: Uint8Array[];
  /** Token ids by their first byte (tokens spelling no bytes are left out). */
  readonly #byFirst: number[][];

  private constructor(path: string, tk: Tokenizer, bytes: Uint8Array[]) {
    this.path = path;
    this.#tk = tk;
    this.#bytes = bytes;
    this.vocabSize = bytes.length;
    this.#byFirst = Array.from({ length: 256 }, () => []);
    bytes.forEach((b, id) => {
      if (b.length > 0) this.#byFirst[b[0]].push(id);
    });
  }

  /** Reads a tokenizer.json (a file, or a folder holding one). */
  static async load(path: string): Promise<SubwordTokenizer> {
    let file = path;
    try {
      if ((await Deno.stat(path)).isDirectory) file = `${path.replace(/\/+$/, "")}/tokenizer.json`;
    } catch {
      // reported by the read below
    }
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(await readTextFileLimited(file, MAX_TOKENIZER_BYTES, "tokenizer"));
    } catch (e) {
      // JSON.parse's message quotes the text it failed on: made one printable line
      throw new MambaByteError(
        `cannot read the tokenizer ${file}: ${printable((e as Error).message, 200)}`,
      );
    }
    const added = checkedIds(json, file);
    let tk: Tokenizer;
    try {
      tk = new Tokenizer(json, {});
    } catch (e) {
      throw new MambaByteError(
        `${file} is not a tokenizer.json it can run: ${printable((e as Error).message, 200)}`,
      );
    }
    const vocab = tk.get_vocab() as Map<string, number> | Record<string, number>;
    const entries: [string, number][] = vocab instanceof Map
      ? [...vocab.entries()]
      : Object.entries(vocab);
    let size = 0;
    for (const [, id] of entries) size = Math.max(size, id + 1);
    for (const a of added) size = Math.max(size, a + 1);
    const byteLevel = JSON.stringify([json.pre_tokenizer, json.decoder]).includes('"ByteLevel"');
    const table = byteLevelTable();
    const enc = new TextEncoder();
    const bytes: Uint8Array[] = Array.from({ length: size }, () => new Uint8Array(0));
    for (const [token, id] of entries) {
      // a vocab where two tokens share an id leaves another id without one: get_vocab then lists
      // it with an undefined token (found by tests/fuzz); such an id spells no bytes
      if (added.has(id) || typeof token !== "string") continue;
      if (byteLevel) {
        const out: number[] = [];
        let ok = true;
        for (const ch of token) {
          const b = table.get(ch);
          if (b === undefined) {
            ok = false;
            break;
          }
          out.push(b);
        }
        bytes[id] = ok ? Uint8Array.from(out) : enc.encode(token);
      } else {
        bytes[id] = enc.encode(tk.decode([id], { skip_special_tokens: true }));
      }
    }
    return new SubwordTokenizer(file, tk, bytes);
  }

  /** The bytes token `id` spells (empty for special tokens and unknown ids). */
  tokenBytes(id: number): Uint8Array {
    return this.#bytes[id] ?? new Uint8Array(0);
  }

  /**
   * Token ids of `bytes`: the longest prefix that ends on a whole UTF-8 character is encoded
   * (no special tokens added); `rest` is the incomplete character after it.
   */
  encodeBytes(bytes: Uint8Array): { ids: number[]; rest: Uint8Array } {
    const n = completeUtf8Length(bytes);
    const text = new TextDecoder().decode(bytes.subarray(0, n));
    const ids = n === 0 ? [] : this.#tk.encode(text, { add_special_tokens: false }).ids;
    return { ids: ids.filter((id) => Number.isInteger(id)), rest: bytes.slice(n) };
  }

  /**
   * The token with the largest logit among those whose bytes start with `prefix` (any token when
   * the prefix is empty); undefined when no token does.
   */
  bestExtension(logits: Float32Array, prefix: Uint8Array): number | undefined {
    let best: number | undefined;
    let bestV = -Infinity;
    const ids = prefix.length === 0 ? undefined : this.#byFirst[prefix[0]];
    const consider = (id: number) => {
      const b = this.#bytes[id];
      if (b.length === 0 || b.length < prefix.length) return;
      for (let i = 1; i < prefix.length; i++) if (b[i] !== prefix[i]) return;
      if (logits[id] > bestV || best === undefined) {
        bestV = logits[id];
        best = id;
      }
    };
    if (ids) { for (const id of ids) consider(id); }
    else for (let id = 0; id < this.#bytes.length; id++) consider(id);
    return best;
  }
}
