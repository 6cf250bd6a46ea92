/**
 * The visualisation's pure parts: moving average, compact float32 JSON, --range parsing, the
 * assembly of the page data (alignment of log_probs with the byte they score, slicing, checks),
 * colour scales, the SVG figures' cell counts, and the page's escaping of user strings.
 */
import assert from "node:assert/strict";
import { MambaByteError } from "../src/errors.ts";
import {
  type AssembleOptions,
  assembleViz,
  float32Json,
  meanOverFeatures,
  movingAverage,
  parseRange,
  type VizInputs,
} from "../src/viz/data.ts";
import { renderHtml, scriptJson } from "../src/viz/html.ts";
import { colorScale, mapColor, niceTicks, percentile, robustDomain } from "../src/viz/scale.ts";
import { heatmapSvg, layerPlotSvg, plotLayout, surprisalPlotSvg } from "../src/viz/svg.ts";
import { defaultCellWidth, formatOfPath, svgPaths } from "../src/viz/write.ts";
import { pageData } from "./helpers/viz.ts";

Deno.test("movingAverage: centred, clipped at the ends, skipping nulls", () => {
  assert.deepEqual(movingAverage([1, 2, 3], 1), [1, 2, 3]);
  assert.deepEqual(movingAverage([1, 2, 3, 4], 3), [1.5, 2, 3, 3.5]);
  assert.deepEqual(movingAverage([null, 2, null, 4], 3), [2, 2, 3, 4]);
  assert.deepEqual(movingAverage([null, null], 1), [null, null]);
  // An even window reaches one more position forward than back.
  assert.deepEqual(movingAverage([0, 10, 20], 2), [5, 15, 20]);
  assert.throws(() => movingAverage([1], 0), RangeError);
});

Deno.test("float32Json: the shortest decimal that reads back as the same float32", () => {
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  for (let i = 0; i < 5000; i++) {
    const x = Math.fround((rand() - 0.5) * 10 ** Math.floor(rand() * 12 - 6));
    const y = float32Json(x);
    assert.equal(Math.fround(y), x);
    assert.ok(String(y).replace(/^-?0\.0*|[-.]|e.*$/g, "").length <= 9, `${x} -> ${y}`);
  }
  assert.equal(float32Json(0.1), 0.1);
  assert.equal(float32Json(Math.fround(55.10670471191406)), 55.106705);
  assert.equal(float32Json(0), 0);
});

Deno.test("parseRange: START:END with either side optional; bad ranges are usage errors", () => {
  assert.deepEqual(parseRange(null, 10), [0, 10]);
  assert.deepEqual(parseRange("2:5", 10), [2, 5]);
  assert.deepEqual(parseRange(":5", 10), [0, 5]);
  assert.deepEqual(parseRange("3:", 10), [3, 10]);
  for (const bad of ["5:5", "6:2", "0:11", "a:b", "3", "-1:4"]) {
    assert.throws(
      () => parseRange(bad, 10),
      (e) => e instanceof MambaByteError && e.exitCode === 2,
    );
  }
});

Deno.test("meanOverFeatures: the mean over the last axis per position", () => {
  const m = meanOverFeatures({
    dtype: "float32",
    shape: [2, 3],
    data: Float32Array.of(1, 2, 3, 4, 6, 8),
  });
  assert.deepEqual([...m], [2, 6]);
});

function inputs(): VizInputs {
  const bytes = new TextEncoder().encode("ab\né!");
  const L = bytes.length; // 6
  return {
    bytes,
    logProbs: Float32Array.from({ length: L - 1 }, (_, i) => -(i + 1) * Math.LN2),
    ranks: Int32Array.from({ length: L - 1 }, (_, i) => i * 10),
    discreteA: new Map([
      [0, Float32Array.from({ length: L }, (_, i) => 50 + i)],
      [1, Float32Array.from({ length: L }, (_, i) => 60 - i)],
    ]),
  };
}

const OPTS: AssembleOptions = {
  colorBy: "surprisal",
  layer: 1,
  layerQuantity: "discrete_A",
  window: 3,
  heatmapScale: "row",
  source: { model_id: "m", checkpoint: null, prompt_source: "--prompt", command: "x" },
};

Deno.test("assembleViz: log_probs and ranks land on the byte they score", () => {
  const d = assembleViz(inputs(), OPTS);
  assert.equal(d.start, 0);
  assert.deepEqual(d.bytes, [97, 98, 10, 0xc3, 0xa9, 33]);
  assert.equal(d.log_probs[0], null);
  assert.deepEqual(d.log_probs.slice(1).map((v) => Math.round(-v! / Math.LN2)), [1, 2, 3, 4, 5]);
  assert.deepEqual(d.ranks, [null, 0, 10, 20, 30, 40]);
  assert.deepEqual(d.discrete_A_fro, { 0: [50, 51, 52, 53, 54, 55], 1: [60, 59, 58, 57, 56, 55] });
  assert.equal(d.delta_mean, undefined);
  assert.equal(d.color.colors.length, 6);
  assert.equal(d.color.colors[0], ""); // the first byte has no surprisal
  assert.ok(d.color.colors.slice(1).every((c) => /^#[0-9a-f]{6}$/.test(c)));
  assert.deepEqual(d.settings.range, [0, 6]);

  const r = assembleViz(inputs(), { ...OPTS, range: [2, 5], colorBy: "discrete_A" });
  assert.equal(r.start, 2);
  assert.deepEqual(r.bytes, [10, 0xc3, 0xa9]);
  assert.deepEqual(r.log_probs.map((v) => Math.round(-v! / Math.LN2)), [2, 3, 4]);
  assert.deepEqual(r.discrete_A_fro![1], [58, 57, 56]);
  assert.ok(r.color.colors.every((c) => c !== ""));
  assert.match(r.color.label, /layer 1/);
});

Deno.test("assembleViz: missing or misshapen inputs are one clear error", () => {
  const code = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      assert.ok(e instanceof MambaByteError, String(e));
      return [e.exitCode, e.message];
    }
    throw new Error("did not throw");
  };
  assert.deepEqual(code(() => assembleViz(inputs(), { ...OPTS, layerQuantity: "delta" })), [
    1,
    "no delta values were given",
  ]);
  assert.deepEqual(code(() => assembleViz(inputs(), { ...OPTS, layer: 4 })), [
    2,
    "--layer 4: no discrete_A for that layer (layers 0, 1)",
  ]);
  const noRanks = { ...inputs(), ranks: undefined };
  assert.equal(code(() => assembleViz(noRanks, { ...OPTS, colorBy: "rank" }))[0], 1);
  const short = { ...inputs(), logProbs: new Float32Array(2) };
  assert.match(String(code(() => assembleViz(short, OPTS))[1]), /log_probs has 2 values/);
});

Deno.test("colour scales: maps, domains and ticks", () => {
  assert.equal(mapColor("viridis", 0), "#440154");
  assert.equal(mapColor("viridis", 1), "#fde725");
  assert.equal(mapColor("ylorrd", 2), "#800026"); // clipped
  assert.equal(percentile([3, 1, 2, null], 50), 2);
  assert.deepEqual(robustDomain([5, 5, 5]), [4.5, 5.5]);
  assert.deepEqual(niceTicks(0, 10, 5), [0, 2, 4, 6, 8, 10]);
  assert.deepEqual(niceTicks(54.6, 55.45, 5), [54.6, 54.8, 55, 55.2, 55.4]);
  const s = colorScale("surprisal", [null, 1, 2, 13], 0);
  assert.deepEqual(s.domain, [0, 14]);
  assert.equal(s.ticks.at(-1), 14);
  assert.deepEqual(colorScale("surprisal", [1, 2], 0).domain, [0, 8]);
  assert.equal(colorScale("rank", [0, 3], 0).transform, "log2p1");
});

Deno.test("SVG figures: one heatmap cell per layer and position; characters when cells are wide", () => {
  const d = assembleViz(inputs(), OPTS);
  const narrow = heatmapSvg(d, plotLayout(2));
  assert.equal(narrow.match(/<rect x="[\d.]+" width=/g)?.length, 2 * 6); // cells, not the legend
  assert.ok(!narrow.includes(`class="chars"`));
  const wide = heatmapSvg(d, plotLayout(10));
  assert.match(wide, /<g class="chars"[^>]*>.*>é</);
  assert.match(wide, /▶ L1</); // the chosen layer is marked
  for (const svg of [surprisalPlotSvg(d, plotLayout(3)), layerPlotSvg(d, plotLayout(3))]) {
    assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg" width="\d+"/);
    assert.match(svg, /<path class="avg" d="M[^"]+"/);
  }
  assert.deepEqual(svgPaths("out/fig.svg", d), [
    "out/fig.heatmap.svg",
    "out/fig.surprisal.svg",
    "out/fig.discrete_A_layer1.svg",
  ]);
  assert.equal(formatOfPath("a/b.HTM"), "html");
  assert.equal(formatOfPath("a/b.txt"), null);
  assert.equal(defaultCellWidth("html", 10000), 2);
  assert.equal(defaultCellWidth("png", 10000), 0.12);
});

Deno.test("the page: user strings cannot end the script or style elements", () => {
  const evil = `</script><script>alert(1)</script><!--`;
  const d = assembleViz(inputs(), {
    ...OPTS,
    source: { ...OPTS.source, prompt_source: evil, command: `a & <b>` },
  });
  assert.ok(!scriptJson({ s: evil }).includes("<"));
  const html = renderHtml(d, { layout: plotLayout(4) });
  assert.equal(html.match(/<\/script>/g)?.length, 2);
  assert.ok(html.includes("a &#38; &#60;b&#62;"));
  assert.equal(pageData(html).settings.prompt_source, evil);
  // Nothing may be fetched: no URLs besides the SVG namespace, a CSP that forbids loads.
  const urls = html.match(/(?:https?:)?\/\/[\w.-]+\.[a-z]{2,}[^\s"')]*/g) ?? [];
  assert.deepEqual([...new Set(urls)], ["http://www.w3.org/2000/svg"]);
  assert.match(html, /Content-Security-Policy" content="default-src 'none'/);
});
