/**
 * The error every checkpoint reader throws for a file a user supplied that cannot be used.
 *
 * @module
 */

import { MambaByteError } from "../errors.ts";

/** A missing, corrupt, hostile or mis-shaped checkpoint; the message is one line. */
export class CheckpointError extends MambaByteError {
  /** Creates the error with a one-line message. */
  constructor(message: string) {
    super(message);
    this.name = "CheckpointError";
  }
}
