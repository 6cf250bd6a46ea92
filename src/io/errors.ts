/**
 * The error the output writers throw for problems a user can cause (bad extension, unwritable
 * path, a value no format can hold).
 *
 * @module
 */

/** A user-facing output error; the command-line layer prints its message as one line. */
export class OutputError extends Error {
  /** Marks the error as caused by user input (see src/cli/main.ts). */
  readonly userFacing = true;
  /** Process exit code. */
  readonly exitCode = 1;
  /** Creates the error with a one-line message. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "OutputError";
  }
}
