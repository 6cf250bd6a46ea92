/**
 * Fuzz case generators, one per input format: a valid file of a small MambaByte model (or a valid
 * config, record, pickle), then structural mutations (duplicate names, huge counts and sizes,
 * deep nesting, BOMs, views, compression) and byte mutations. A case is rebuilt from its seed.
 *
 * @module
 */

import type { FuzzCase, Target } from "./case.ts";
import { genLegacy, genSafetensors, genTorchZip } from "./gen_checkpoints.ts";
import { genHfFolder, genYaml } from "./gen_folders.ts";
import { genRaw, genRead, genTokenizer, genWrite } from "./gen_other.ts";
import { genPickle, zipPickle } from "./gen_pickle.ts";
import { genArgv } from "./gen_argv.ts";
import { Rng } from "./rng.ts";

export {
  type CaseFile,
  FUZZ_DIMS,
  type FuzzCase,
  initGenerators,
  type Target,
  TARGETS,
} from "./case.ts";

export async function generate(target: Target, seed: number): Promise<FuzzCase> {
  const rng = new Rng(seed);
  switch (target) {
    case "safetensors":
      return genSafetensors(rng);
    case "torch-zip":
      return await genTorchZip(rng);
    case "legacy-torch":
      return genLegacy(rng);
    case "pickle": {
      const c = genPickle(rng);
      if (!c.pickle) c.files[0].data = await zipPickle(c.files[0].data!, rng);
      return c;
    }
    case "yaml":
      return genYaml(rng);
    case "hf-folder":
      return await genHfFolder(rng);
    case "raw":
      return genRaw(rng);
    case "write":
      return genWrite(rng);
    case "read":
      return await genRead(rng);
    case "tokenizer":
      return await genTokenizer(rng);
    case "argv":
      return genArgv(rng);
  }
}
