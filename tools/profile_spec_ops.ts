/**
 * Where speculative decoding's time goes on the CPU, op by op: times every Backend call of the
 * target model (the drafter's backend is its own and is not counted) during one speculative
 * generation with timed phases, then during plain generation of the same bytes.
 *
 * Usage: deno run -A tools/profile_spec_ops.ts [target (small)] [drafter (tiny)] [bytes (256)]
 */
import { Backend, loadDraftModel, loadModel, type SpeculativeStats } from "../mod.ts";

const [targetId = "small", draftId = "tiny", nArg = "256"] = Deno.args;
const N = Number(nArg);
const CONFIG = new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname;
const PROMPT = new TextEncoder().encode(
  "BAPTISTA:\nI follow you.\n\nBIONDELLO:\nCambio!\n\nLUCENTIO:\nWhat sayest thou?",
);

const target = await loadModel({ configPath: CONFIG, modelId: targetId, device: "cpu" });
const draft = await loadDraftModel({ configPath: CONFIG, modelId: draftId, device: "cpu" });

// Every method of Backend, wrapped with a timer that counts the target's calls (CPU ops are
// synchronous, so a call's wall time is its op's time).
const totals = new Map<string, { ms: number; calls: number }>();
const proto = Backend.prototype as unknown as Record<string, unknown>;
for (const name of Object.getOwnPropertyNames(proto)) {
  const f = Object.getOwnPropertyDescriptor(proto, name)?.value;
  if (typeof f !== "function" || name === "constructor") continue;
  proto[name] = function (this: unknown, ...args: unknown[]) {
    const t0 = performance.now();
    try {
      return f.apply(this, args);
    } finally {
      if (this === target.backend) {
        const e = totals.get(name) ?? { ms: 0, calls: 0 };
        e.ms += performance.now() - t0;
        e.calls++;
        totals.set(name, e);
      }
    }
  };
}

function report(title: string, perRound = 1): void {
  console.log(title);
  const rows = [...totals].sort((a, b) => b[1].ms - a[1].ms).slice(0, 8);
  for (const [name, { ms, calls }] of rows) {
    console.log(
      `  ${name.padEnd(20)} ${ms.toFixed(1).padStart(8)} ms ${String(calls).padStart(6)} calls` +
        (perRound > 1 ? ` ${(ms / perRound).toFixed(3).padStart(8)} ms a round` : ""),
    );
  }
  totals.clear();
}

try {
  const o = { maxNewTokens: N, topK: 1 };
  await target.generate(PROMPT, { ...o, maxNewTokens: 32, draft: { model: draft, length: 7 } });
  totals.clear();
  let st: SpeculativeStats | undefined;
  const t0 = performance.now();
  await target.generate(PROMPT, {
    ...o,
    draft: { model: draft, length: 7, profilePhases: true, onStats: (s) => st = s },
  });
  const p = st!.phaseSeconds!;
  report(
    `speculative (${targetId} drafted by ${draftId}, greedy, ${N} bytes): ${
      (performance.now() - t0).toFixed(1)
    } ms, ${st!.rounds} rounds; phases draft ${(p.draft * 1e3).toFixed(1)} ms, verify ${
      (p.verify * 1e3).toFixed(1)
    } ms, resume ${(p.resume * 1e3).toFixed(1)} ms; the target's ops:`,
    st!.rounds,
  );
  const t1 = performance.now();
  await target.generate(PROMPT, o);
  report(`plain (${N} bytes): ${(performance.now() - t1).toFixed(1)} ms; the target's ops:`);
} finally {
  draft.close();
  target.close();
}
