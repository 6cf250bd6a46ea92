/**
 * GraphCache's schedule, on a recording stand-in for a backend with graphs: a key's first run is
 * direct, its second captured and launched, later ones launched; keys that share a warm-up key
 * are captured on their first run once one of them has run directly (generate's two step graphs).
 */
import assert from "node:assert/strict";
import type { Backend } from "../src/backend/backend.ts";
import { GraphCache } from "../src/generate/graphs.ts";

function recorder() {
  const log: string[] = [];
  let next = 0;
  const be = {
    supportsGraphs: true,
    graphBegin: () => void log.push("begin"),
    graphEnd: () => (log.push("end"), next++),
    graphLaunch: (g: number) => void log.push(`launch ${g}`),
    graphDestroy: (g: number) => void log.push(`destroy ${g}`),
  };
  return { be: be as unknown as Backend, log };
}

Deno.test("GraphCache: direct, then captured, then replayed; a shared warm-up key", () => {
  const { be, log } = recorder();
  const graphs = new GraphCache<string>(be);
  const body = (name: string) => () => void log.push(`body ${name}`);
  graphs.run("a", body("a"));
  graphs.run("a", body("a"));
  graphs.run("a", body("a"));
  assert.deepEqual(log.splice(0), ["body a", "begin", "body a", "end", "launch 0", "launch 0"]);
  // odd and even share "step": one direct run, then each captured on its first run
  graphs.run("odd", body("odd"), "step");
  graphs.run("even", body("even"), "step");
  graphs.run("odd", body("odd"), "step");
  graphs.run("even", body("even"), "step");
  assert.deepEqual(log.splice(0), [
    "body odd",
    "begin",
    "body even",
    "end",
    "launch 1",
    "begin",
    "body odd",
    "end",
    "launch 2",
    "launch 1",
  ]);
  graphs.free();
  assert.deepEqual(log.splice(0).sort(), ["destroy 0", "destroy 1", "destroy 2"]);
  // disabled: every run is direct
  const off = new GraphCache<string>(be, false);
  off.run("a", body("a"));
  off.run("a", body("a"));
  assert.deepEqual(log, ["body a", "body a"]);
});
