/**
 * The one module that knows the YAML parser (npm:yaml standing in for @std/yaml, which JSR would
 * provide): switching parsers is a change to this file alone.
 *
 * @module
 */
import { parse } from "yaml";

/** Parses a YAML document into plain JS values. */
export function parseYaml(text: string): unknown {
  return parse(text);
}
