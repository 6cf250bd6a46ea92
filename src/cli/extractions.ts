/**
 * The three extraction scripts' definitions (flags, checks, result sizes, computation), shared by
 * their entry points in scripts/ and by the corpus runner (src/corpus), which runs them over many
 * documents without going through the scripts.
 *
 * @module
 */

import { reducedShape } from "../analysis/discrete_a.ts";
import {
  extractDiscreteA,
  extractInputSimilarity,
  extractModuleOutputs,
  parseModuleId,
} from "../analysis/extract.ts";
import {
  originalDiscreteA,
  originalModuleOutput,
  originalScores,
} from "../analysis/original_layout.ts";
import { torchTensor } from "../io/value.ts";
import type { TapName } from "../model/model.ts";
import { tapWidth } from "../model/model.ts";
import { UsageError } from "./errors.ts";
import { type ExtractionScript, scoreFields } from "./session.ts";

const MODULE_OUTPUTS_PROG = "extract_module_outputs.ts";

/** extract_discrete_A.ts: discrete-A = exp(delta ⊗ A), optionally reduced, with optional scores. */
export const EXTRACT_DISCRETE_A: ExtractionScript = {
  prog: "extract_discrete_A.ts",
  description: "Extract discrete-A (exp(delta * A)) of a MambaByte model.",
  flags: { modules: false, nonlinearity: false },
  label: "extracting discrete_A",
  resultBytes: (dims, L, layers, args) => {
    const shape = reducedShape(
      [L, dims.dInner, dims.dState],
      args.reduction,
      args.reduction_dim,
    );
    const n = shape.reduce((a, b) => a * b, 1);
    const withIndices = args.output_layout === "original" &&
      (args.reduction === "min" || args.reduction === "max");
    return layers.map(() => n * (withIndices ? 12 : 4));
  },
  compute: async (model, prompt, args, onProgress) => {
    const original = args.output_layout === "original";
    const r = await extractDiscreteA(model, prompt.bytes, {
      layers: args.layer_idxs ?? undefined,
      reduction: args.reduction,
      reductionDim: args.reduction_dim,
      indices: original,
      logProbs: args.return_log_probs,
      ranks: args.return_ranks,
      onProgress,
    });
    const layers = [...r.perLayer.keys()];
    if (original) {
      // The original fills its dict in --layer_idxs order.
      const order = [...new Set(args.layer_idxs ?? layers)];
      return {
        discrete_A: new Map(order.map((l) => [
          l,
          originalDiscreteA(r.perLayer.get(l)!, r.indices?.get(l), args.reduction),
        ])),
        ...originalScores(r),
        model_id: args.model_id ?? model.config.id,
        layer_idxs: args.layer_idxs ?? layers,
        reduction: args.reduction,
        pretrained_model_filepath: args.pretrained_model_filepath,
      };
    }
    return {
      discrete_A: r.perLayer,
      ...scoreFields(r),
      model_id: model.config.id,
      layer_idxs: layers,
      reduction: args.reduction,
      reduction_dim: args.reduction_dim,
      pretrained_model_filepath: args.pretrained_model_filepath,
    };
  },
};

/** extract_module_outputs.ts: module outputs (e.g. delta = softplus(dt_proj)), with optional scores. */
export const EXTRACT_MODULE_OUTPUTS: ExtractionScript = {
  prog: MODULE_OUTPUTS_PROG,
  description: "Extract module outputs of a MambaByte model.",
  flags: { reduction: false },
  label: "extracting",
  validate: (args) => {
    if (!args.module_ids) {
      throw new UsageError(
        MODULE_OUTPUTS_PROG,
        "the following arguments are required: --module_id",
      );
    }
    try {
      args.module_ids.forEach(parseModuleId);
    } catch (e) {
      throw new UsageError(MODULE_OUTPUTS_PROG, `argument --module_id: ${(e as Error).message}`);
    }
    if (args.output_layout === "original" && args.module_ids.length !== 1) {
      throw new UsageError(
        MODULE_OUTPUTS_PROG,
        "argument --output_layout: original stores one module: give one --module_id",
      );
    }
  },
  resultBytes: (dims, L, layers, args) =>
    args.module_ids!.flatMap((id) => layers.map(() => L * tapWidth(parseModuleId(id), dims) * 4)),
  compute: async (model, prompt, args, onProgress) => {
    const ids = args.module_ids!;
    const modules = ids.map(parseModuleId);
    const original = args.output_layout === "original";
    // The original's conv1d output includes the padded tail, which needs x from in_proj.
    const taps: TapName[] = original && modules[0] === "conv1d" ? ["conv1d", "in_proj"] : modules;
    const nonlinearity = args.nonlinearity ?? "linear";
    const r = await extractModuleOutputs(model, prompt.bytes, {
      modules: taps,
      layers: args.layer_idxs ?? undefined,
      nonlinearity: original ? "linear" : nonlinearity,
      logProbs: args.return_log_probs,
      ranks: args.return_ranks,
      onProgress,
    });
    const layers = [...r.modules.get(modules[0])!.keys()];
    if (original) {
      const tap = modules[0];
      const perLayer = new Map(layers.map((l) => [
        l,
        originalModuleOutput(
          model,
          tap,
          l,
          r.modules.get(tap)!.get(l)!,
          nonlinearity,
          r.modules.get("in_proj")?.get(l),
        ),
      ]));
      return {
        [ids[0]]: perLayer,
        ...originalScores(r),
        model_id: args.model_id ?? model.config.id,
        module_id: ids[0],
        layer_idxs: args.layer_idxs ?? layers,
        pretrained_model_filepath: args.pretrained_model_filepath,
      };
    }
    const results = Object.fromEntries(ids.map((id, i) => [id, r.modules.get(modules[i])]));
    return {
      ...results,
      ...scoreFields(r),
      model_id: model.config.id,
      module_id: ids.length === 1 ? ids[0] : ids,
      layer_idxs: layers,
      nonlinearity,
      pretrained_model_filepath: args.pretrained_model_filepath,
    };
  },
};

/** extract_input_sim_with_discrete_A.ts: the cosine similarity of discrete-A with the input x, with optional scores. */
export const EXTRACT_INPUT_SIM: ExtractionScript = {
  prog: "extract_input_sim_with_discrete_A.ts",
  description: "Cosine similarity of discrete-A with the input x.",
  flags: { modules: false, nonlinearity: false, reduction: false },
  label: "extracting input similarity",
  resultBytes: (dims, L, layers) => layers.map(() => L * dims.dState * 4),
  compute: async (model, prompt, args, onProgress) => {
    const r = await extractInputSimilarity(model, prompt.bytes, {
      layers: args.layer_idxs ?? undefined,
      logProbs: args.return_log_probs,
      ranks: args.return_ranks,
      onProgress,
    });
    const layers = [...r.perLayer.keys()];
    if (args.output_layout === "original") {
      const order = [...new Set(args.layer_idxs ?? layers)];
      return {
        input_sim_with_discrete_A: new Map(
          order.map((l) => [l, torchTensor(r.perLayer.get(l)!)]),
        ),
        ...originalScores(r),
        model_id: args.model_id ?? model.config.id,
        layer_idxs: args.layer_idxs ?? layers,
        pretrained_model_filepath: args.pretrained_model_filepath,
      };
    }
    return {
      input_sim_with_discrete_A: r.perLayer,
      ...scoreFields(r),
      model_id: model.config.id,
      layer_idxs: layers,
      pretrained_model_filepath: args.pretrained_model_filepath,
    };
  },
};

/** The extraction scripts by name (the script's file name without .ts). */
export const EXTRACTIONS = {
  extract_discrete_A: EXTRACT_DISCRETE_A,
  extract_module_outputs: EXTRACT_MODULE_OUTPUTS,
  extract_input_sim_with_discrete_A: EXTRACT_INPUT_SIM,
} as const;

/** The name of an extraction script. */
export type ExtractionName = keyof typeof EXTRACTIONS;
