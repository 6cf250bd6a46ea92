/**
 * Extracts the cosine similarity over d_inner between discrete-A and the mixer input x,
 * (L, d_state) per layer, plus optional log-probabilities and ranks (the original
 * extract_input_sim_with_discrete_A script's flags).
 *
 * deno task extract:input-sim --prompt_file pg19_samples/860.txt --return_log_probs \
 *   --filepath_to_store_outputs artefacts/input_sim_860.pkl
 */
import { EXTRACT_INPUT_SIM } from "../src/cli/extractions.ts";
import { runMain } from "../src/cli/mod.ts";
import { runExtractionScript } from "../src/cli/session.ts";

if (import.meta.main) await runMain((argv) => runExtractionScript(EXTRACT_INPUT_SIM, argv));
