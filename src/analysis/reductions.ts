/**
 * The reductions of discrete-A, a tensor of shape (L, D, N) (positions, channels, state), as torch
 * names them: mean / min / max / norm over one dimension (negative dims count from the end) or over
 * everything when no dimension is given; `fro` and `nuc` give one Frobenius or nuclear norm per
 * position of the (D, N) matrix. They are computed natively (mb_discrete_a, through
 * discrete_a.ts); this module holds their names and torch's dimension rule.
 *
 * @module
 */

import { MambaByteError } from "../errors.ts";

/** Names accepted by `--reduction`. */
export const REDUCTIONS = ["mean", "min", "max", "norm", "fro", "nuc"] as const;

/** One of {@link REDUCTIONS}. */
export type Reduction = (typeof REDUCTIONS)[number];

/** Maps a possibly negative `dim` into [0, ndim), as torch ("Dimension out of range"). */
export function normalizeDim(dim: number, ndim: number): number {
  if (!Number.isInteger(dim) || dim < -ndim || dim >= ndim) {
    throw new MambaByteError(
      `dimension out of range (expected to be in range of [${-ndim}, ${ndim - 1}], but got ${dim})`,
    );
  }
  return dim < 0 ? dim + ndim : dim;
}
