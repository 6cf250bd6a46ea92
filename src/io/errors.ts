/**
 * The error the output writers throw for problems a user can cause (bad extension, unwritable
 * path, a value no format can hold).
 *
 * @module
 */

import { MambaByteError } from "../errors.ts";

/** A user-facing output error; the command-line layer prints its message as one line. */
export class OutputError extends MambaByteError {
  /** Marks the error as caused by user input (see src/cli/main.ts). */
  readonly userFacing = true;
  /** Creates the error with a one-line message. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, 1);
    if (options?.cause !== undefined) this.cause = options.cause;
    this.name = "OutputError";
  }
}
