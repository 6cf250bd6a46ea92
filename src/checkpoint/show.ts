/**
 * How strings and numbers that come from an untrusted file appear in error messages: quoted,
 * escaped to printable ASCII (no control characters, no terminal escapes, no new lines) and cut to
 * a short length, so a message stays one readable line and never reproduces a file's contents.
 *
 * @module
 */

/** Longest quoted string shown, in characters before escaping. */
const MAX_SHOWN = 80;
/** Most list elements shown. */
const MAX_ITEMS = 8;

/** `s` in double quotes, non-printable characters escaped, cut after `max` characters. */
export function quote(s: string, max = MAX_SHOWN): string {
  const cut = s.length > max;
  let out = "";
  for (const ch of cut ? s.slice(0, max) : s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"' || ch === "\\") out += `\\${ch}`;
    else if (c >= 0x20 && c < 0x7f) out += ch;
    else if (c <= 0xff) out += `\\x${c.toString(16).padStart(2, "0")}`;
    else if (c <= 0xffff) out += `\\u${c.toString(16).padStart(4, "0")}`;
    else out += `\\u{${c.toString(16)}}`;
  }
  return `"${out}"${cut ? `... (${s.length} characters)` : ""}`;
}

/** Whether `s` holds a control character (C0 or DEL): a new line, a terminal escape, ... */
export function hasControl(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

/** A path as given when it has no control characters, else {@link quote}d (one line, escaped). */
export function showPath(p: string): string {
  return p.length <= 4096 && !hasControl(p) ? p : quote(p, 200);
}

/** A tensor name as it is when it is short and plain (`layers.0.mixer.D`), else {@link quote}d. */
export function showName(s: string): string {
  return /^[\w.\-:/\[\]]{1,80}$/.test(s) ? s : quote(s);
}

/** A list of numbers as `[a,b,c]`, cut after a few elements. */
export function showInts(xs: readonly unknown[]): string {
  const shown = xs.slice(0, MAX_ITEMS).map((x) => typeof x === "number" ? String(x) : "?");
  return `[${shown.join(",")}${xs.length > MAX_ITEMS ? `,... (${xs.length} dims)` : ""}]`;
}

/** What kind of JSON-ish value `v` is, without showing it ("a string", "an array", ...). */
export function kindOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (typeof v === "object") return "an object";
  if (typeof v === "string") return "a string";
  if (typeof v === "number") return "a number";
  if (typeof v === "boolean") return "a boolean";
  if (v === undefined) return "missing";
  return `a ${typeof v}`;
}
