/**
 * Command-line machinery shared by the scripts: flags (argparse), prompt resolution, progress on
 * stderr, and the error-to-exit-code wrapper.
 *
 * @module
 */

export * from "./args.ts";
export { UserError } from "./errors.ts";
export { describeError, isUserFacing, runMain } from "./main.ts";
export { type Progress, progress, type ProgressOptions, setQuiet } from "./progress.ts";
export { type ResolvedPrompt, resolvePrompt } from "./prompt.ts";
