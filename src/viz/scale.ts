/**
 * Colour scales: two colour maps (a light yellow-orange-red for text backgrounds, so black text
 * stays readable on most of it, and viridis for the heatmap), the value domain of each quantity,
 * and ticks for legends and axes.
 *
 * @module
 */

/** Colour maps by name: evenly spaced anchor colours, interpolated linearly in RGB. */
export const COLOR_MAPS = {
  // ColorBrewer YlOrRd (9 classes).
  ylorrd: [
    "#ffffcc",
    "#ffeda0",
    "#fed976",
    "#feb24c",
    "#fd8d3c",
    "#fc4e2a",
    "#e31a1c",
    "#bd0026",
    "#800026",
  ],
  // matplotlib viridis, sampled at 9 points.
  viridis: [
    "#440154",
    "#472d7b",
    "#3b528b",
    "#2c728e",
    "#21918c",
    "#28ae80",
    "#5ec962",
    "#addc30",
    "#fde725",
  ],
} as const;

/** A colour map name. */
export type ColorMapName = keyof typeof COLOR_MAPS;

/** How values map to [0, 1] before the colour map: linear, or log2(1 + v) for ranks. */
export type Transform = "linear" | "log2p1";

/** A colour scale as the page and legends need it (JSON-able). */
export interface ColorScale {
  /** Legend title, e.g. "surprisal (bits)". */
  label: string;
  /** Colour map. */
  map: ColorMapName;
  /** Value transform. */
  transform: Transform;
  /** Values at the two ends of the map (in value units); values outside are clipped. */
  domain: [number, number];
  /** Tick values for the legend (in value units). */
  ticks: number[];
}

function hexToRgb(h: string): [number, number, number] {
  return [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)) as [number, number, number];
}

/** The colour of t in [0, 1] (clipped) on a colour map, as #rrggbb. */
export function mapColor(map: ColorMapName, t: number): string {
  const stops = COLOR_MAPS[map];
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const a = hexToRgb(stops[i]), b = hexToRgb(stops[i + 1]);
  return "#" + a.map((c, k) => Math.round(c + (b[k] - c) * f).toString(16).padStart(2, "0")).join(
    "",
  );
}

function transformed(tr: Transform, v: number): number {
  return tr === "log2p1" ? Math.log2(1 + Math.max(0, v)) : v;
}

/** Position in [0, 1] of value v on a scale (clipped). */
export function scalePosition(s: Pick<ColorScale, "transform" | "domain">, v: number): number {
  const lo = transformed(s.transform, s.domain[0]), hi = transformed(s.transform, s.domain[1]);
  const t = hi > lo ? (transformed(s.transform, v) - lo) / (hi - lo) : 0.5;
  return Math.min(1, Math.max(0, t));
}

/** The colour of value v on a scale. */
export function scaleColor(s: ColorScale, v: number): string {
  return mapColor(s.map, scalePosition(s, v));
}

/** The p-th percentile (0-100, linear interpolation) of the finite values; NaN when none. */
export function percentile(values: readonly (number | null)[], p: number): number {
  const xs = values.filter((v): v is number => v !== null && Number.isFinite(v)).sort((a, b) =>
    a - b
  );
  if (xs.length === 0) return NaN;
  const r = (p / 100) * (xs.length - 1);
  const i = Math.floor(r);
  return i + 1 < xs.length ? xs[i] + (xs[i + 1] - xs[i]) * (r - i) : xs[i];
}

/**
 * A robust domain of values: the 1st to 99th percentile (the extremes would wash the colours
 * out), widened to the full range when that is degenerate.
 */
export function robustDomain(values: readonly (number | null)[]): [number, number] {
  let lo = percentile(values, 1), hi = percentile(values, 99);
  if (!(hi > lo)) {
    lo = percentile(values, 0);
    hi = percentile(values, 100);
  }
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
  if (!(hi > lo)) return [lo - 0.5, hi + 0.5];
  return [lo, hi];
}

/**
 * About `count` round tick values inside [lo, hi] (1, 2, 2.5 or 5 times a power of ten apart),
 * at least two whenever the range allows.
 */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
    out.push(Number(v.toPrecision(12)));
  }
  return out;
}

/** Legend label of a quantity. */
export function quantityLabel(by: string, layer?: number): string {
  switch (by) {
    case "surprisal":
      return "surprisal (bits)";
    case "rank":
      return "rank of the byte (0 = top choice)";
    case "discrete_A":
      return `discrete-A Frobenius norm, layer ${layer}`;
    default:
      return `delta (mean softplus(dt_proj)), layer ${layer}`;
  }
}

/** The text's colour scale for a quantity, from the shown values. */
export function colorScale(
  by: string,
  values: readonly (number | null)[],
  layer: number,
): ColorScale {
  if (by === "surprisal") {
    // 0 bits up to the 99th percentile, at least 8 bits (a uniform guess over bytes).
    // Rounded up to an even number so the top tick is the domain's end.
    const p99 = Math.ceil(percentile(values, 99)) || 0;
    const hi = Math.max(8, p99 + (p99 % 2));
    return {
      label: quantityLabel(by),
      map: "ylorrd",
      transform: "linear",
      domain: [0, hi],
      ticks: niceTicks(0, hi, 4).concat(hi % 4 ? [hi] : []),
    };
  }
  if (by === "rank") {
    return {
      label: quantityLabel(by),
      map: "ylorrd",
      transform: "log2p1",
      domain: [0, 255],
      ticks: [0, 1, 3, 7, 15, 31, 63, 127, 255],
    };
  }
  const domain = robustDomain(values);
  return {
    label: quantityLabel(by, layer),
    map: "ylorrd",
    transform: "linear",
    domain,
    ticks: niceTicks(domain[0], domain[1], 4),
  };
}
