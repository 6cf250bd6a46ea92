/**
 * Rasterises a page (rendered in figure mode) to PNG with headless Chromium: the page is loaded
 * from a temporary file, its script lays out the text, and the `#figure` element is captured.
 *
 * @module
 */

import { MambaByteError } from "../errors.ts";
import { atomicReplace } from "../io/atomic.ts";
import { Browser } from "./chromium.ts";

/** Margin around the figure in the image, CSS pixels. */
const MARGIN = 8;

/** Renders `html` in Chromium and writes a PNG of its `#figure` element to `path`. */
export async function rasterisePage(html: string, path: string, width: number): Promise<void> {
  const tmp = await Deno.makeTempFile({ prefix: "mambabyte-viz-", suffix: ".html" });
  try {
    await Deno.writeTextFile(tmp, html);
    const browser = await Browser.launch();
    try {
      const page = await browser.newPage(width + 40, 900);
      await page.goto(`file://${tmp}`);
      await page.waitFor(`document.documentElement.getAttribute("data-ready") === "1"`);
      const box = await page.evaluate<{ x: number; y: number; width: number; height: number }>(
        `(() => { const r = document.getElementById("figure").getBoundingClientRect();
          return { x: r.left + scrollX, y: r.top + scrollY, width: r.width, height: r.height }; })()`,
      );
      if (page.report.errors.length) {
        throw new MambaByteError(`the page failed in Chromium: ${page.report.errors[0]}`);
      }
      const clip = {
        x: Math.max(0, Math.floor(box.x - MARGIN)),
        y: Math.max(0, Math.floor(box.y - MARGIN)),
        width: Math.ceil(box.width + 2 * MARGIN),
        height: Math.ceil(box.height + 2 * MARGIN),
      };
      // A viewport holding the whole figure: captures beyond it are less reliable.
      await page.setViewport(clip.x + clip.width, clip.y + clip.height);
      const png = await page.screenshot(clip);
      await atomicReplace(path, (t) => Deno.writeFile(t, png));
    } finally {
      await browser.close();
    }
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
}
