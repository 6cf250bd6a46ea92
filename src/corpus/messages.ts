/**
 * The messages between the embedded mode's coordinator and its worker threads (one per GPU), and
 * how an error crosses between them: as its one-line message and exit code.
 *
 * @module
 */

import { describeError } from "../cli/main.ts";
import type { DeviceSetting } from "../config/config.ts";
import type { TaskSpec } from "./flags.ts";
import type { DocResult } from "./layout.ts";
import type { CorpusJob } from "./runner.ts";

/** An error as one line and the exit code a script would end with. */
export interface ErrorInfo {
  message: string;
  exitCode: number;
}

/** Coordinator -> worker thread. */
export type ToWorker =
  | { type: "open"; spec: TaskSpec; device: DeviceSetting }
  | { type: "run"; job: CorpusJob }
  | { type: "close" };

/** Worker thread -> coordinator. */
export type FromWorker =
  | { type: "ready"; label: string }
  | { type: "fatal"; error: ErrorInfo }
  | { type: "progress"; done: number; total: number }
  | { type: "done"; result: DocResult & { computed: boolean } }
  | { type: "failed"; error: ErrorInfo; permanent: boolean }
  | { type: "closed" };

/** An error as the line runMain would print (without "error: ") and its exit code. */
export function errorInfo(err: unknown): ErrorInfo {
  const d = describeError(err);
  return { message: (d.lines[0] ?? String(err)).replace(/^error: /, ""), exitCode: d.code };
}
