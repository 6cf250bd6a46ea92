/**
 * The base class of errors a user can cause (bad config, missing file, shape mismatch, no GPU).
 * The command-line layer prints their message as one line and exits with `exitCode`.
 *
 * @module
 */

/** An error caused by the user's input, reported as one clear line. */
export class MambaByteError extends Error {
  /** Process exit code the command-line layer uses (1 = runtime error, 2 = usage error). */
  readonly exitCode: number;
  /** Creates the error with a one-line message. */
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = "MambaByteError";
    this.exitCode = exitCode;
  }
}

/**
 * `s` made one printable line of at most `max` characters for an error message: every character
 * outside printable ASCII becomes "?" (a foreign message, a parser's or a file's, may quote bytes).
 */
export function printable(s: string, max: number): string {
  return s.replace(/[^\x20-\x7e]/g, "?").slice(0, max);
}
