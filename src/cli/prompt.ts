/**
 * The prompt of a run, from --prompt or --prompt_file (exactly one). A byte-level model reads
 * bytes, so a file's bytes are used as they are; the string is for display.
 *
 * @module
 */

import { UserError } from "./errors.ts";

/** A resolved prompt. */
export interface ResolvedPrompt {
  /** The prompt's bytes (UTF-8 of --prompt, or the file's exact bytes). */
  bytes: Uint8Array;
  /** The prompt as text (invalid UTF-8 in a file shows as U+FFFD). */
  text: string;
  /** Where it came from. */
  source: "prompt" | "prompt_file";
}

/**
 * Resolves the prompt from parsed flags; exactly one of `prompt` and `prompt_file` must be set.
 * A missing file is a {@link UserError} "prompt file not found: <path>".
 */
export async function resolvePrompt(
  args: { prompt?: string | null; prompt_file?: string | null },
): Promise<ResolvedPrompt> {
  const hasText = args.prompt !== null && args.prompt !== undefined;
  const hasFile = args.prompt_file !== null && args.prompt_file !== undefined;
  if (hasText && hasFile) throw new UserError("give either --prompt or --prompt_file, not both");
  if (hasText) {
    return { bytes: new TextEncoder().encode(args.prompt!), text: args.prompt!, source: "prompt" };
  }
  if (!hasFile) throw new UserError("a prompt is required: give --prompt or --prompt_file");
  const path = args.prompt_file!;
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new UserError(`prompt file not found: ${path}`, { cause: err });
    }
    if (err instanceof Deno.errors.IsADirectory) {
      throw new UserError(`prompt file is a directory: ${path}`, { cause: err });
    }
    const why = err instanceof Error ? err.message : String(err);
    throw new UserError(`cannot read prompt file ${path}: ${why}`, { cause: err });
  }
  return { bytes, text: new TextDecoder().decode(bytes), source: "prompt_file" };
}
