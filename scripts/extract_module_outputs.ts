/**
 * Extracts module outputs (e.g. delta = softplus(dt_proj)) of chosen layers, with optional
 * log-probabilities and ranks (the original extract_module_outputs script's flags).
 *
 * deno task extract:module-outputs --prompt "Hello" --module_id dt_proj --nonlinearity softplus \
 *   --layer_idxs 0 1 --return_log_probs --return_ranks --filepath_to_store_outputs out.pkl
 */
import { EXTRACT_MODULE_OUTPUTS } from "../src/cli/extractions.ts";
import { runMain } from "../src/cli/mod.ts";
import { runExtractionScript } from "../src/cli/session.ts";

if (import.meta.main) await runMain((argv) => runExtractionScript(EXTRACT_MODULE_OUTPUTS, argv));
