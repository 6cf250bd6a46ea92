/**
 * The self-contained HTML page: a summary line, the text coloured byte by byte with its legend,
 * the heatmap and the two line plots (inline SVG, in one horizontally scrolling box so they stay
 * aligned), and the settings. The data travel as a JSON block that the inline script reads; the
 * page loads nothing from anywhere.
 *
 * @module
 */

import { surprisalBits, type VizData } from "./data.ts";
import { PAGE_SCRIPT } from "./page_script.ts";
import {
  colorLegendSvg,
  escapeXml,
  figureWidth,
  fmtNum,
  heatmapSvg,
  layerPlotSvg,
  type PlotLayout,
  surprisalPlotSvg,
} from "./svg.ts";

/** Options of {@link renderHtml}. */
export interface HtmlOptions {
  /** x layout of the figures. */
  layout: PlotLayout;
  /**
   * Figure mode (for rasterising): nothing scrolls, the page is as wide as the figures and the
   * text is shown whole.
   */
  figure?: boolean;
}

const CSS = `
body { margin: 16px; font: 14px/1.45 "DejaVu Sans", "Liberation Sans", Arial, sans-serif;
  color: #111; background: #fff; }
h1 { font-size: 18px; margin: 0 0 2px; }
p.sub { color: #333; margin: 0 0 10px; }
.legend-row { margin: 4px 0; }
#text { position: relative; font: 13px/1.95 "DejaVu Sans Mono", "Liberation Mono", monospace;
  white-space: pre-wrap; overflow-wrap: anywhere; max-height: 42vh; overflow-y: auto;
  border: 1px solid #ccc; padding: 6px 8px; margin: 0 0 12px; }
#text .b { white-space: pre; }
#text .c { display: inline-block; width: 3px; height: 1.3em; vertical-align: text-bottom; }
#text .none { background: repeating-linear-gradient(45deg, #eee 0 3px, #fff 3px 6px); }
#text .hl { outline: 2px solid #000; outline-offset: 0; position: relative; z-index: 1; }
.plots { overflow-x: auto; border: 1px solid #ccc; margin: 0 0 12px; }
.plots svg { display: block; }
#tooltip { position: fixed; pointer-events: none; z-index: 10; white-space: pre;
  background: rgba(17, 17, 17, 0.93); color: #fff; font: 12px/1.45 "DejaVu Sans Mono", monospace;
  padding: 6px 8px; border-radius: 4px; }
#tooltip[hidden] { display: none; }
table.settings { border-collapse: collapse; font-size: 12.5px; }
table.settings th { text-align: left; font-weight: normal; color: #555; padding: 1px 14px 1px 0;
  vertical-align: top; white-space: nowrap; }
table.settings td { font-family: "DejaVu Sans Mono", "Liberation Mono", monospace;
  overflow-wrap: anywhere; }
h2 { font-size: 14px; margin: 14px 0 4px; }
`;

const FIGURE_CSS = `
#text { max-height: none; overflow: visible; }
.plots { overflow: visible; border: none; }
`;

/** JSON that is safe inside a `<script>` element (no `</script>`, no line separators). */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, "\\u003c")
    .replace(/\u2028/g, "\\u2028")
    .replace(/\u2029/g, "\\u2029");
}

function settingsRows(d: VizData): [string, string][] {
  const s = d.settings;
  const rows: [string, string][] = [
    ["model id", s.model_id ?? "(not recorded)"],
    ["checkpoint", s.checkpoint ?? "(not recorded: random weights or unknown)"],
  ];
  if (s.device) rows.push(["device, dtype", `${s.device}, ${s.dtype ?? "?"}`]);
  rows.push(["prompt", s.prompt_source]);
  if (s.outputs_files) rows.push(["outputs files", s.outputs_files.join(", ")]);
  rows.push(
    ["positions shown", `${s.range[0]}-${s.range[1]} (${s.range[1] - s.range[0]} bytes)`],
    ["--color_by", s.color_by],
    ["--layer", String(s.layer)],
    ["--layer_quantity", s.layer_quantity],
    ["--heatmap_scale", s.heatmap_scale],
    ["--window", String(s.window)],
    ["text colour domain", `${d.color.domain.map(fmtNum).join(" to ")} (${d.color.transform})`],
    ["command", s.command],
  );
  return rows;
}

/** One-line summary under the title. */
function summary(d: VizData): string {
  const s = d.settings;
  const bits = d.log_probs.filter((v): v is number => v !== null).map(surprisalBits);
  const mean = bits.reduce((a, b) => a + b, 0) / Math.max(1, bits.length);
  const what = s.color_by === "surprisal" || s.color_by === "rank"
    ? s.color_by
    : `${s.color_by} of layer ${s.layer}`;
  return `model ${s.model_id ?? "?"} · ${d.bytes.length.toLocaleString("en")} bytes` +
    ` (positions ${s.range[0]}-${s.range[1]}) · mean surprisal ${mean.toFixed(3)} bits/byte` +
    ` · text coloured by ${what}`;
}

/** The page's title: the prompt file's name, or the text's first words. */
function pageTitle(d: VizData): string {
  const src = d.settings.prompt_source;
  if (src.startsWith("--prompt")) {
    // 48 bytes may cut a character: drop its replacement character.
    const head = new TextDecoder().decode(Uint8Array.from(d.bytes.slice(0, 48)));
    const text = head.replace(/\s+/g, " ").replace(/\ufffd+$/, "");
    return `MambaByte internals: "${text.trim()}${d.bytes.length > 48 ? "..." : ""}"`;
  }
  return `MambaByte internals: ${src.slice(src.lastIndexOf("/") + 1)}`;
}

/** Renders the page. */
export function renderHtml(d: VizData, opts: HtmlOptions): string {
  const l = opts.layout;
  const width = figureWidth(l, d.bytes.length);
  const figureCss = opts.figure ? FIGURE_CSS + `body { width: ${width}px; }` : "";
  const rows = settingsRows(d).map(([k, v]) =>
    `<tr><th>${escapeXml(k)}</th><td>${escapeXml(v)}</td></tr>`
  ).join("\n");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<title>${escapeXml(pageTitle(d))}</title>
<style>${CSS}${figureCss}</style>
</head>
<body>
<main id="figure">
<h1>${escapeXml(pageTitle(d))}</h1>
<p class="sub">${escapeXml(summary(d))}</p>
<div class="legend-row">${colorLegendSvg(d.color)}</div>
<div id="text" aria-label="the text, each byte coloured by ${escapeXml(d.settings.color_by)}"></div>
<div class="plots">
${heatmapSvg(d, l)}
${surprisalPlotSvg(d, l)}
${layerPlotSvg(d, l)}
</div>
<h2>Settings</h2>
<table class="settings">
${rows}
</table>
</main>
<div id="tooltip" role="tooltip" hidden></div>
<script type="application/json" id="mb-data">${scriptJson(d)}</script>
<script>${PAGE_SCRIPT}</script>
</body>
</html>
`;
}
