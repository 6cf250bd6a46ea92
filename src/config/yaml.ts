/**
 * The one module that knows the YAML parser (npm:yaml standing in for @std/yaml, which JSR would
 * provide): switching parsers is a change to this file alone.
 *
 * Bounded for hostile documents: npm:yaml spends ~100 us per mapping key and checks duplicate keys
 * pairwise (a flat 220 KB mapping took 7 s, a 4 MB one over a minute), so documents are capped at
 * {@link MAX_CONFIG_BYTES} and duplicate keys are found here with a set per mapping instead.
 *
 * @module
 */
// Versioned inline: a project importing mod.ts by URL does not see our deno.json import map.
// deno-lint-ignore no-import-prefix
import { isMap, isScalar, parseDocument, visit } from "npm:yaml@2.9.1";

/**
 * Largest configuration document: 256 KiB (the shipped configs/mambabyte_lm.yml is ~2 KB). Also
 * the cap for reading a config file (readTextFileLimited in src/io/read_limited.ts).
 */
export const MAX_CONFIG_BYTES = 256 << 10;

/** Longest mapping key accepted. */
const MAX_KEY_CHARS = 256;

/** True for control characters; tab, CR and LF count only when `strict` (keys). */
function hasControl(s: string, strict = true): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (!strict && (c === 0x09 || c === 0x0a || c === 0x0d)) continue;
    if (c < 0x20 || (c >= 0x7f && c < 0xa0)) return true;
  }
  return false;
}

/** Parses a YAML document into plain JS values; throws an Error with a one-line reason. */
export function parseYaml(text: string): unknown {
  if (text.length > MAX_CONFIG_BYTES) {
    throw new Error(`document of ${text.length} characters is over the 256 KiB limit`);
  }
  const doc = parseDocument(text, { uniqueKeys: false, prettyErrors: false });
  if (doc.errors.length > 0) throw doc.errors[0];
  visit(doc, {
    // Config messages repeat values ("default_model_id '<value>' is not a model id"): a value
    // may span lines, but must not carry other control characters to the terminal.
    Scalar(_key, node) {
      if (typeof node.value === "string" && hasControl(node.value, false)) {
        throw new Error("a string value holds control characters");
      }
    },
    Map(_key, map) {
      if (!isMap(map)) return;
      const seen = new Set<unknown>();
      for (const pair of map.items) {
        const k = isScalar(pair.key) ? pair.key.value : pair.key;
        if (typeof k === "object" && k !== null) {
          throw new Error("complex mapping keys are not supported");
        }
        // Keys become object property names: 1 and "1" are the same key once parsed.
        const name = String(k);
        // Keys are names (model ids, settings) that messages repeat: keep them short and plain.
        if (name.length > MAX_KEY_CHARS) {
          throw new Error(`a mapping key is longer than ${MAX_KEY_CHARS} characters`);
        }
        if (hasControl(name)) throw new Error("a mapping key holds control characters");
        if (seen.has(name)) throw new Error(`duplicate key ${JSON.stringify(name.slice(0, 80))}`);
        seen.add(name);
      }
    },
  });
  return doc.toJS({ maxAliasCount: 100 });
}
