/**
 * The page's figures as standalone SVG documents (inlined in the HTML page, or written as files
 * by `--format svg`): the layers x positions heatmap, the line plots over positions, and colour
 * legends. Everything is drawn from a {@link VizData}; all figures share one x layout (a left
 * margin and `cell` pixels per byte), so stacked they line up position for position.
 *
 * @module
 */

import { movingAverage, surprisalBits, type VizData } from "./data.ts";
import {
  type ColorMapName,
  type ColorScale,
  mapColor,
  niceTicks,
  quantityLabel,
  robustDomain,
  scalePosition,
} from "./scale.ts";

/** The shared x layout of the figures. */
export interface PlotLayout {
  /** Pixels per byte (may be below 1 for long texts in a fixed width). */
  cell: number;
  /** Left margin (axis labels). */
  left: number;
  /** Right margin. */
  right: number;
}

/** The layout for `n` positions at `cell` pixels each. */
export function plotLayout(cell: number): PlotLayout {
  return { cell, left: 64, right: 20 };
}

/** Total width of a figure over `n` positions. */
export function figureWidth(l: PlotLayout, n: number): number {
  return Math.ceil(l.left + n * l.cell + l.right);
}

const FONT = `font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif"`;

/** Escapes text for XML/HTML content and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A number for labels: at most 4 significant digits, no exponent for ordinary values. */
export function fmtNum(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-4) return v.toExponential(2);
  return String(Number(v.toPrecision(4)));
}

/** A coordinate with at most 2 decimals. */
function c(x: number): string {
  return String(Math.round(x * 100) / 100);
}

function svgOpen(width: number, height: number, attrs: string): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" ${FONT} font-size="11" ${attrs}>` +
    `<rect class="bg" width="100%" height="100%" fill="#ffffff"/>`;
}

/** Position ticks at least ~70 px apart (1, 2 or 5 times a power of ten bytes). */
function positionTicks(start: number, n: number, cell: number): number[] {
  const minGap = Math.max(1, 70 / cell);
  const mag = 10 ** Math.floor(Math.log10(minGap));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= minGap)!;
  const out: number[] = [];
  for (let p = Math.ceil(start / step) * step; p < start + n; p += step) out.push(p);
  return out;
}

function xAxis(l: PlotLayout, start: number, n: number, y: number): string {
  const x0 = l.left, x1 = l.left + n * l.cell;
  let s = `<g class="x-axis"><line x1="${c(x0)}" y1="${y}" x2="${c(x1)}" y2="${y}" ` +
    `stroke="#555"/>`;
  for (const p of positionTicks(start, n, l.cell)) {
    const x = l.left + (p - start + 0.5) * l.cell;
    s += `<line x1="${c(x)}" y1="${y}" x2="${c(x)}" y2="${y + 4}" stroke="#555"/>` +
      `<text x="${c(x)}" y="${y + 15}" text-anchor="middle" fill="#333">${p}</text>`;
  }
  return s + `</g>`;
}

/** A horizontal colour bar with a title and value ticks (or end labels). */
function colorBar(
  x: number,
  y: number,
  width: number,
  map: ColorMapName,
  title: string,
  ticks: { at: number; label: string }[],
  id: string,
  titleRight = false,
): string {
  const [tx, ty] = titleRight ? [x + width + 12, y + 24] : [x, y + 10];
  let s = `<g class="legend"><text x="${tx}" y="${ty}" fill="#222">${escapeXml(title)}</text>` +
    `<defs><linearGradient id="${id}">`;
  for (let i = 0; i <= 16; i++) {
    s += `<stop offset="${c(i / 16)}" stop-color="${mapColor(map, i / 16)}"/>`;
  }
  s += `</linearGradient></defs><rect x="${x}" y="${y + 15}" width="${width}" height="10" ` +
    `fill="url(#${id})" stroke="#888" stroke-width="0.5"/>`;
  for (const t of ticks) {
    const px = x + t.at * width;
    s += `<line x1="${c(px)}" y1="${y + 25}" x2="${c(px)}" y2="${y + 28}" stroke="#555"/>` +
      `<text x="${c(px)}" y="${y + 38}" text-anchor="middle" fill="#333">` +
      `${escapeXml(t.label)}</text>`;
  }
  return s + `</g>`;
}

/** The legend of the text colours as a small standalone SVG. */
export function colorLegendSvg(scale: ColorScale): string {
  const w = 300;
  const ticks = scale.ticks.map((v) => ({ at: scalePosition(scale, v), label: fmtNum(v) }));
  // Values beyond the domain's end take its colour: say so at the end of the bar.
  const top = ticks.at(-1);
  if (top && top.at === 1 && scale.transform === "linear") top.label = `≥ ${top.label}`;
  return svgOpen(w + 40, 46, `class="color-legend"`) +
    colorBar(20, 2, w, scale.map, scale.label, ticks, "text-legend-gradient") + `</svg>`;
}

/** The per-layer values the heatmap shows. */
function layerValues(data: VizData): Record<string, number[]> {
  const q = data.settings.layer_quantity;
  return (q === "discrete_A" ? data.discrete_A_fro : data.delta_mean) ?? {};
}

/** Heatmap row height for `layers` rows: 16 px, shrinking to 4 px for deep models. */
export function heatmapRowHeight(layers: number): number {
  return Math.max(4, Math.min(16, Math.floor(288 / Math.max(1, layers))));
}

/** A byte's glyph for the character row: lead bytes decoded, ↵ for newlines, else nothing. */
function glyphs(bytes: number[]): string[] {
  const out: string[] = new Array(bytes.length).fill("");
  const dec = new TextDecoder();
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i];
    const len = b < 0x80 ? 1 : b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
    const ch = dec.decode(Uint8Array.from(bytes.slice(i, i + len)));
    const shown = ch.length <= 2 && !ch.includes("\ufffd") ? ch : "";
    out[i] = b === 0x0a ? "\u21b5" : b < 0x20 || b === 0x7f ? "" : shown;
    i += ch.includes("\ufffd") ? 1 : len;
  }
  return out;
}

/**
 * The layers x positions heatmap of the chosen layer quantity. Each row is coloured over its own
 * 1st-99th percentile ("row" scale; the layers' ranges differ a lot) or one range for all.
 */
export function heatmapSvg(data: VizData, l: PlotLayout): string {
  const s = data.settings;
  const values = layerValues(data);
  const layers = Object.keys(values).map(Number).sort((a, b) => a - b);
  const n = data.bytes.length;
  const rowH = heatmapRowHeight(layers.length);
  const top = 56;
  const chars = l.cell >= 7;
  const rowsEnd = top + layers.length * rowH;
  const axisY = rowsEnd + (chars ? 18 : 4);
  const height = axisY + 22;
  const width = figureWidth(l, n);
  const name = s.layer_quantity === "discrete_A"
    ? "discrete-A Frobenius norm"
    : "delta (mean softplus(dt_proj))";
  const global = s.heatmap_scale === "global";
  const globalDomain = robustDomain(layers.flatMap((k) => values[k]));
  let out = svgOpen(
    width,
    height,
    `class="heatmap" data-kind="heatmap" data-left="${l.left}" data-top="${top}" ` +
      `data-cell="${l.cell}" data-row-h="${rowH}" data-layers="${layers.join(",")}"`,
  );
  out += `<text x="${l.left}" y="14" font-size="13" font-weight="bold" fill="#111">` +
    `${escapeXml(name)} per layer and position</text>`;
  const barTicks = global
    ? niceTicks(globalDomain[0], globalDomain[1], 4).map((v) => ({
      at: (v - globalDomain[0]) / (globalDomain[1] - globalDomain[0]),
      label: fmtNum(v),
    }))
    : [{ at: 0, label: "low" }, { at: 1, label: "high" }];
  out += colorBar(
    l.left,
    16,
    200,
    "viridis",
    global
      ? "all layers on one scale (1st-99th percentile)"
      : "each layer: its 1st-99th percentile",
    barTicks,
    "heatmap-gradient",
    true,
  );
  for (let r = 0; r < layers.length; r++) {
    const layer = layers[r];
    const row = values[layer];
    const [lo, hi] = global ? globalDomain : robustDomain(row);
    const y = top + r * rowH;
    const chosen = layer === s.layer;
    out += `<text x="${l.left - 6}" y="${c(y + rowH / 2 + 3.5)}" text-anchor="end" ` +
      `font-size="${Math.min(11, rowH)}" fill="${chosen ? "#000" : "#444"}"` +
      `${chosen ? ` font-weight="bold"` : ""}>${chosen ? "▶ " : ""}L${layer}</text>`;
    out += `<g class="cells" data-layer="${layer}" transform="translate(${l.left},${y})" ` +
      `shape-rendering="crispEdges">`;
    for (let p = 0; p < n; p++) {
      const t = hi > lo ? (row[p] - lo) / (hi - lo) : 0.5;
      out += `<rect x="${c(p * l.cell)}" width="${c(l.cell)}" height="${rowH}" ` +
        `fill="${mapColor("viridis", t)}"/>`;
    }
    out += `</g>`;
  }
  if (chars) {
    const g = glyphs(data.bytes);
    const fs = Math.min(12, Math.floor(l.cell * 1.25));
    out += `<g class="chars" font-family="DejaVu Sans Mono, Liberation Mono, monospace" ` +
      `font-size="${fs}" text-anchor="middle" fill="#222">`;
    for (let p = 0; p < n; p++) {
      if (g[p] === "" || g[p] === " ") continue;
      out += `<text x="${c(l.left + (p + 0.5) * l.cell)}" y="${rowsEnd + 13}">` +
        `${escapeXml(g[p])}</text>`;
    }
    out += `</g>`;
  }
  out += xAxis(l, data.start, n, axisY);
  return out + `</svg>`;
}

/** The series a line plot draws: per-byte values (null = none) and labels. */
interface Series {
  values: (number | null)[];
  title: string;
  color: string;
  kind: string;
  /** Include 0 in the y range (surprisal). */
  fromZero: boolean;
}

function pathOf(values: (number | null)[], x: (i: number) => number, y: (v: number) => number) {
  let d = "";
  let pen = false;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v === null || !Number.isFinite(v)) {
      pen = false;
      continue;
    }
    d += `${pen ? "L" : "M"}${c(x(i))} ${c(y(v))}`;
    pen = true;
  }
  return d;
}

function linePlot(data: VizData, l: PlotLayout, s: Series): string {
  const n = data.bytes.length;
  const w = data.settings.window;
  const avg = movingAverage(s.values, w);
  const finite = s.values.filter((v): v is number => v !== null && Number.isFinite(v));
  let lo = s.fromZero ? 0 : Math.min(...finite), hi = Math.max(...finite);
  if (!(hi > lo)) {
    lo -= 0.5;
    hi += 0.5;
  }
  const ticks = niceTicks(lo, hi, 5);
  const top = 34, plotH = 130, axisY = top + plotH;
  const height = axisY + 24;
  const width = figureWidth(l, n);
  const x = (i: number) => l.left + (i + 0.5) * l.cell;
  const y = (v: number) => top + plotH * (1 - (v - lo) / (hi - lo));
  let out = svgOpen(
    width,
    height,
    `class="line-plot" data-kind="${s.kind}" data-left="${l.left}" data-top="${top}" ` +
      `data-cell="${l.cell}" data-height="${plotH}"`,
  );
  out += `<text x="${l.left}" y="14" font-size="13" font-weight="bold" fill="#111">` +
    `${escapeXml(s.title)}</text>` +
    `<g font-size="11"><line x1="${l.left}" y1="25" x2="${
      l.left + 18
    }" y2="25" stroke="#9a9a9a"/>` +
    `<text x="${l.left + 22}" y="29" fill="#333">per byte</text>` +
    `<line x1="${l.left + 80}" y1="25" x2="${l.left + 98}" y2="25" stroke="${s.color}" ` +
    `stroke-width="2"/><text x="${l.left + 102}" y="29" fill="#333">moving average over ${w} ` +
    `byte${w === 1 ? "" : "s"} (centred)</text></g>`;
  out += `<g class="y-axis">`;
  for (const t of ticks) {
    if (t < lo || t > hi) continue;
    out += `<line x1="${l.left}" y1="${c(y(t))}" x2="${c(l.left + n * l.cell)}" y2="${c(y(t))}" ` +
      `stroke="#e4e4e4"/><text x="${l.left - 6}" y="${c(y(t) + 3.5)}" text-anchor="end" ` +
      `fill="#333">${fmtNum(t)}</text>`;
  }
  out += `<line x1="${l.left}" y1="${top}" x2="${l.left}" y2="${axisY}" stroke="#555"/></g>`;
  out += `<path class="raw" d="${pathOf(s.values, x, y)}" fill="none" stroke="#9a9a9a" ` +
    `stroke-width="0.8" stroke-linejoin="round"/>`;
  out += `<path class="avg" d="${pathOf(avg, x, y)}" fill="none" stroke="${s.color}" ` +
    `stroke-width="1.8" stroke-linejoin="round"/>`;
  out += xAxis(l, data.start, n, axisY);
  return out + `</svg>`;
}

/** The surprisal (bits) over positions, with its moving average. */
export function surprisalPlotSvg(data: VizData, l: PlotLayout): string {
  return linePlot(data, l, {
    values: data.log_probs.map((v) => v === null ? null : surprisalBits(v)),
    title: "surprisal (bits) of each byte",
    color: "#c0392b",
    kind: "surprisal",
    fromZero: true,
  });
}

/** The chosen layer's quantity over positions, with its moving average. */
export function layerPlotSvg(data: VizData, l: PlotLayout): string {
  const s = data.settings;
  return linePlot(data, l, {
    values: layerValues(data)[String(s.layer)],
    title: quantityLabel(s.layer_quantity, s.layer),
    color: "#1f6fb2",
    kind: "layer",
    fromZero: false,
  });
}
