/**
 * Errors the command-line layer knows how to report: {@link UserError} for anything a user can
 * cause, {@link UsageError} for a bad command line, {@link HelpExit} after `--help`.
 *
 * @module
 */

import { MambaByteError } from "../errors.ts";

/** An error caused by the user's input; printed as `error: <message>`, exit code `exitCode`. */
export class UserError extends MambaByteError {
  /** Marks the error as caused by user input. */
  readonly userFacing = true;
  /** Creates the error with a one-line message (exit code 1 unless given). */
  constructor(message: string, options?: ErrorOptions & { exitCode?: number }) {
    super(message, options?.exitCode ?? 1);
    if (options?.cause !== undefined) this.cause = options.cause;
    this.name = "UserError";
  }
}

/** A bad command line; printed as `<prog>: error: <message>`, exit code 2 (as Python argparse). */
export class UsageError extends UserError {
  /** The program name. */
  readonly prog: string;
  /** argparse's usage text, for callers that want to show it. */
  readonly usage: string;
  /** Creates the error from argparse's message. */
  constructor(prog: string, message: string, usage = "") {
    super(message, { exitCode: 2 });
    this.name = "UsageError";
    this.prog = prog;
    this.usage = usage;
  }
}

/** Thrown once `--help` (or another terminating action) has printed; exit with `status`. */
export class HelpExit extends Error {
  /** Process exit code (0 after help). */
  readonly status: number;
  /** Creates the signal. */
  constructor(status = 0) {
    super(`exit ${status}`);
    this.name = "HelpExit";
    this.status = status;
  }
}
