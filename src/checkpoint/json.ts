/**
 * A strict JSON parser for the JSON inside checkpoints (safetensors headers, config.json, index
 * files). Unlike JSON.parse it refuses duplicate keys (JSON.parse keeps the last one silently, so
 * two readers of one file could disagree about its weights) and nesting beyond a small depth, and
 * its errors give a byte position only: JSON.parse's messages quote the input, which would echo
 * the contents of whatever file was given.
 *
 * Objects come back with a null prototype, so a key such as "__proto__" is plain data.
 *
 * @module
 */

import { quote } from "./show.ts";

/** Why the text is not acceptable JSON; the message never contains the input. */
export class JsonSyntaxError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "JsonSyntaxError";
  }
}

/** Options of {@link parseJsonStrict}. */
export interface StrictJsonOptions {
  /** Deepest nesting of arrays and objects (default 64). */
  maxDepth?: number;
}

const WS = new Set([0x20, 0x09, 0x0a, 0x0d]);

/** Parses `text` as one JSON value; throws {@link JsonSyntaxError}. */
export function parseJsonStrict(text: string, opts: StrictJsonOptions = {}): unknown {
  const maxDepth = opts.maxDepth ?? 64;
  let pos = 0;
  const fail = (why: string): never => {
    throw new JsonSyntaxError(`${why} at character ${pos}`);
  };
  const skipWs = () => {
    while (pos < text.length && WS.has(text.charCodeAt(pos))) pos++;
  };
  const expect = (word: string, value: unknown) => {
    if (text.startsWith(word, pos)) {
      pos += word.length;
      return value;
    }
    return fail("unexpected character");
  };

  const str = (): string => {
    pos++; // opening quote
    let out = "";
    let run = pos;
    for (;;) {
      if (pos >= text.length) fail("unterminated string");
      const c = text.charCodeAt(pos);
      if (c === 0x22) {
        out += text.slice(run, pos);
        pos++;
        return out;
      }
      if (c < 0x20) fail("control character in a string");
      if (c !== 0x5c) {
        pos++;
        continue;
      }
      out += text.slice(run, pos);
      const e = text[pos + 1];
      pos += 2;
      switch (e) {
        case '"':
        case "\\":
        case "/":
          out += e;
          break;
        case "b":
          out += "\b";
          break;
        case "f":
          out += "\f";
          break;
        case "n":
          out += "\n";
          break;
        case "r":
          out += "\r";
          break;
        case "t":
          out += "\t";
          break;
        case "u": {
          const hex = text.slice(pos, pos + 4);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail("bad \\u escape");
          out += String.fromCharCode(parseInt(hex, 16));
          pos += 4;
          break;
        }
        default:
          pos -= 2;
          fail("bad escape");
      }
      run = pos;
    }
  };

  const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
  const num = (): number => {
    NUMBER.lastIndex = pos;
    const m = NUMBER.exec(text);
    if (!m || m[0] === "-") return fail("bad number");
    pos += m[0].length;
    return Number(m[0]);
  };

  // Iterative, so depth costs heap (bounded by maxDepth) rather than the call stack.
  type Frame = { arr: unknown[] } | { obj: Record<string, unknown>; key: string };
  const stack: Frame[] = [];
  let result: unknown;
  let done = false;
  const open = (frame: Frame) => {
    if (stack.length >= maxDepth) fail(`nesting deeper than ${maxDepth} levels`);
    stack.push(frame);
  };
  // Reads an object key (or the closing brace of an empty / finished object).
  const key = (f: { obj: Record<string, unknown>; key: string }): boolean => {
    skipWs();
    if (text.charCodeAt(pos) !== 0x22) return fail("expected a string key");
    const k = str();
    if (Object.hasOwn(f.obj, k)) fail(`duplicate key ${quote(k)}`);
    f.key = k;
    skipWs();
    if (text.charCodeAt(pos) !== 0x3a) fail("expected ':'");
    pos++;
    return true;
  };
  const store = (v: unknown) => {
    const f = stack[stack.length - 1];
    if (!f) {
      result = v;
      done = true;
    } else if ("arr" in f) f.arr.push(v);
    else f.obj[f.key] = v;
  };

  for (;;) {
    // A value is expected here.
    skipWs();
    const c = text.charCodeAt(pos);
    let value: unknown;
    let isValue = true;
    if (c === 0x7b) { // {
      pos++;
      const obj = Object.create(null) as Record<string, unknown>;
      skipWs();
      if (text.charCodeAt(pos) === 0x7d) {
        pos++;
        value = obj;
      } else {
        const f = { obj, key: "" };
        open(f);
        key(f);
        isValue = false;
      }
    } else if (c === 0x5b) { // [
      pos++;
      skipWs();
      if (text.charCodeAt(pos) === 0x5d) {
        pos++;
        value = [];
      } else {
        open({ arr: [] });
        isValue = false;
      }
    } else if (c === 0x22) value = str();
    else if (c === 0x74) value = expect("true", true);
    else if (c === 0x66) value = expect("false", false);
    else if (c === 0x6e) value = expect("null", null);
    else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) value = num();
    else fail(pos >= text.length ? "unexpected end of JSON" : "unexpected character");
    if (!isValue) continue;
    store(value);
    // Close finished containers, or move on to the next element.
    for (;;) {
      if (done) {
        skipWs();
        if (pos !== text.length) fail("unexpected data after the JSON value");
        return result;
      }
      skipWs();
      const f = stack[stack.length - 1];
      const d = text.charCodeAt(pos);
      if (d === 0x2c) { // ,
        pos++;
        if (!("arr" in f)) key(f);
        break;
      }
      if (("arr" in f && d === 0x5d) || (!("arr" in f) && d === 0x7d)) {
        pos++;
        stack.pop();
        store("arr" in f ? f.arr : f.obj);
        continue;
      }
      fail(pos >= text.length ? "unexpected end of JSON" : "expected ',' or a closing bracket");
    }
  }
}
