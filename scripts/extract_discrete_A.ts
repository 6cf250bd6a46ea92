/**
 * Extracts discrete-A = exp(delta ⊗ A) (L, d_inner, d_state) of chosen layers, optionally reduced
 * (mean/min/max/norm over --reduction_dim, fro/nuc per position), plus optional log-probabilities
 * and ranks (the original extract_discrete_A script's flags).
 *
 * deno task extract:discrete-A --prompt_file pg19_samples/860.txt --reduction fro \
 *   --return_log_probs --return_ranks --filepath_to_store_outputs artefacts/dA_860_fro.pkl
 */
import { EXTRACT_DISCRETE_A } from "../src/cli/extractions.ts";
import { runMain } from "../src/cli/mod.ts";
import { runExtractionScript } from "../src/cli/session.ts";

if (import.meta.main) await runMain((argv) => runExtractionScript(EXTRACT_DISCRETE_A, argv));
