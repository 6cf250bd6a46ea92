/**
 * The one module that knows the YAML parser (npm:yaml standing in for @std/yaml, which JSR would
 * provide): switching parsers is a change to this file alone.
 *
 * @module
 */
// Versioned inline: a project importing mod.ts by URL does not see our deno.json import map.
// deno-lint-ignore no-import-prefix
import { parse } from "npm:yaml@2.9.1";

/** Parses a YAML document into plain JS values. */
export function parseYaml(text: string): unknown {
  return parse(text);
}
