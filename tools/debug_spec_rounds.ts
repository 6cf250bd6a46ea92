/**
 * Device rounds of speculative decoding against plain decoding, in several forms (graphs on and
 * off, one round or many between synchronisations), printing the first differing byte of each:
 * a GPU debugging aid (tools/device/*.sh run it with MAMBABYTE_CUDA_* variants).
 *
 *   deno run -A tools/debug_spec_rounds.ts [--device cuda] [--n 300]
 */
import { loadModel } from "../mod.ts";
import { Backend } from "../src/backend/backend.ts";
import { ModelDrafter } from "../src/generate/drafter.ts";
import { generateSpeculative } from "../src/generate/speculative.ts";

// SPEC_DEBUG=<op>:<when>[,...]: synchronise the device before or after every call of a Backend
// method (e.g. copy:after, embedding:before, specCommit:before): where a race hides.
for (const item of (Deno.env.get("SPEC_DEBUG") ?? "").split(",").filter(Boolean)) {
  const [op, when] = item.split(":");
  // deno-lint-ignore no-explicit-any
  const proto = Backend.prototype as any;
  const orig = proto[op];
  proto[op] = function (this: Backend, ...a: unknown[]) {
    if (when === "before") this.sync();
    const r = orig.apply(this, a);
    if (when === "after") this.sync();
    return r;
  };
}
const args = Deno.args;
const opt = (name: string, dflt: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const device = opt("device", "cuda") as "cpu" | "cuda";
const N = Number(opt("n", "300"));
const config = new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname;
const target = await loadModel({ configPath: config, modelId: "small", device });
const draft = await loadModel({ configPath: config, modelId: "tiny", device, threads: 1 });
const prompt = new TextEncoder().encode("KING RICHARD III:\nNow is the winter of our ");
const o = { maxNewTokens: N, seed: 4740, topK: 1 };
const [plain] = await target.generate(prompt, o);
const forms: [string, Record<string, unknown>][] = [
  ["host rounds", { deviceRounds: false }],
  ["device, graphs, 16 ahead", { deviceRounds: true }],
  ["device, graphs, 1 ahead", { deviceRounds: true, roundsAhead: 1 }],
  ["device, no graphs, 16 ahead", { deviceRounds: true, useGraphs: false }],
  ["device, no graphs, 1 ahead", { deviceRounds: true, useGraphs: false, roundsAhead: 1 }],
];
const only = opt("only", "");
for (const [name, extra] of forms.filter(([n]) => n.includes(only))) {
  const d = new ModelDrafter(draft);
  try {
    const { bytes, stats } = await generateSpeculative(target, prompt, d, {
      ...o,
      draftLength: 7,
      ...extra,
    });
    let first = -1;
    for (let i = 0; i < N; i++) {
      if (bytes[i] !== plain[i]) {
        first = i;
        break;
      }
    }
    console.log(
      `${name}: ${
        first < 0 ? "identical" : `first difference at byte ${first}`
      }; rounds ${stats.rounds}, acceptance ${stats.acceptanceRate.toFixed(3)}`,
    );
  } finally {
    d.free();
  }
}
draft.close();
target.close();
