/**
 * Helpers of the visualisation tests: the data block of a page, page handling in Chromium, and a
 * small PNG decoder (8-bit RGB/RGBA, not interlaced: what Chromium writes) that counts an image's
 * distinct colours.
 *
 * @module
 */

import type { Browser, Page } from "../../src/viz/chromium.ts";
import type { VizData } from "../../src/viz/data.ts";

/** The JSON data block embedded in a page. */
export function pageData(html: string): VizData {
  const m = /<script type="application\/json" id="mb-data">([\s\S]*?)<\/script>/.exec(html);
  if (!m) throw new Error("the page has no mb-data block");
  return JSON.parse(m[1]);
}

/** A decoded PNG's size and number of distinct RGB colours. */
export interface PngSummary {
  width: number;
  height: number;
  colors: number;
}

async function inflate(data: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([data as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
    new DecompressionStream("deflate"),
  );
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Decodes a PNG enough to count its distinct colours; throws on anything unexpected. */
export async function pngSummary(png: Uint8Array): Promise<PngSummary> {
  const sig = [137, 80, 78, 71, 13, 10, 26, 10];
  if (!sig.every((b, i) => png[i] === b)) throw new Error("not a PNG");
  const dv = new DataView(png.buffer, png.byteOffset, png.byteLength);
  let pos = 8, width = 0, height = 0, colorType = -1;
  const idat: Uint8Array[] = [];
  while (pos < png.length) {
    const len = dv.getUint32(pos);
    const type = new TextDecoder().decode(png.subarray(pos + 4, pos + 8));
    const body = png.subarray(pos + 8, pos + 8 + len);
    if (type === "IHDR") {
      width = dv.getUint32(pos + 8);
      height = dv.getUint32(pos + 12);
      const depth = body[8];
      colorType = body[9];
      if (depth !== 8 || (colorType !== 2 && colorType !== 6) || body[12] !== 0) {
        throw new Error(`unsupported PNG: depth ${depth}, colour type ${colorType}`);
      }
    } else if (type === "IDAT") {
      idat.push(body);
    }
    pos += 12 + len;
  }
  const all = new Uint8Array(idat.reduce((n, b) => n + b.length, 0));
  let o = 0;
  for (const b of idat) {
    all.set(b, o);
    o += b.length;
  }
  const raw = await inflate(all);
  const bpp = colorType === 6 ? 4 : 3;
  const stride = width * bpp;
  if (raw.length !== height * (stride + 1)) throw new Error("PNG data has the wrong size");
  const prev = new Uint8Array(stride), cur = new Uint8Array(stride);
  const colors = new Set<number>();
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? cur[i - bpp] : 0, b = prev[i], c = i >= bpp ? prev[i - bpp] : 0;
      let pred = 0;
      if (f === 1) pred = a;
      else if (f === 2) pred = b;
      else if (f === 3) pred = (a + b) >> 1;
      else if (f === 4) {
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      } else if (f !== 0) throw new Error(`bad PNG filter ${f}`);
      cur[i] = (line[i] + pred) & 0xff;
    }
    for (let x = 0; x < width; x++) {
      const i = x * bpp;
      colors.add((cur[i] << 16) | (cur[i + 1] << 8) | cur[i + 2]);
    }
    prev.set(cur);
  }
  return { width, height, colors: colors.size };
}

/** The centre of the first element matching `selector`, scrolled into view (viewport px). */
export async function centre(page: Page, selector: string): Promise<{ x: number; y: number }> {
  return await page.evaluate(`(() => {
    const el = document.querySelector(${JSON.stringify(selector)});
    el.scrollIntoView({ block: "center", inline: "center" });
    const r = el.getBoundingClientRect();
    return { x: r.left + r.width / 2, y: r.top + r.height / 2 };
  })()`);
}

export async function openPage(browser: Browser, path: string): Promise<Page> {
  const page = await browser.newPage(1280, 900);
  await page.goto(`file://${path}`);
  await page.waitFor(`document.documentElement.getAttribute("data-ready") === "1"`);
  return page;
}

/** The tooltip's text when shown, else null. */
export function tooltip(page: Page): Promise<string | null> {
  return page.evaluate(`(() => {
    const t = document.getElementById("tooltip");
    return t.hidden || t.offsetWidth === 0 ? null : t.textContent;
  })()`);
}
