/**
 * visualize.ts's page in a real browser (headless Chromium, started by the test through
 * src/viz/chromium.ts): it renders with no console errors and no requests but its own file, has
 * one text cell per byte and one heatmap cell per layer and position, shows a byte's tooltip on
 * hover (from the text and from the heatmap), and a screenshot is far from blank. Also the
 * standalone SVG files and --format png (the 10 KB PG19 pages: viz_pg19_test.ts).
 */
import assert from "node:assert/strict";
import { Browser, chromiumMissing } from "../src/viz/chromium.ts";
import { runScriptOk } from "./helpers/scripts.ts";
import { centre, openPage, pageData, pngSummary, tooltip } from "./helpers/viz.ts";

const noChromium = chromiumMissing();
if (noChromium) console.warn(`skipping the browser tests of visualize.ts: ${noChromium}`);

const PROMPT = `First Citizen:
Before we proceed any further, hear me speak.

All:
Speak, speak. — ¿Qué? Ærø 日本
`;
const MODEL = ["--model_id", "tiny", "--device", "cpu", "--quiet"];

Deno.test({
  name: "visualize: the page renders in Chromium, with cells, tooltips and a non-blank screenshot",
  ignore: noChromium !== null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "mb-viz-browser-" });
    const browser = await Browser.launch();
    try {
      const html = `${dir}/page.html`;
      await runScriptOk("visualize.ts", [...MODEL, "--prompt", PROMPT, "--output", html]);
      const data = pageData(await Deno.readTextFile(html));
      const n = new TextEncoder().encode(PROMPT).length;
      assert.equal(data.bytes.length, n);
      const page = await openPage(browser, html);
      const counts = await page.evaluate<Record<string, number>>(`({
        bytes: document.querySelectorAll("#text .b").length,
        cells: document.querySelectorAll("svg.heatmap g.cells rect").length,
        rows: document.querySelectorAll("svg.heatmap g.cells").length,
        plots: document.querySelectorAll("svg.line-plot path.avg").length,
        avgPoints: (document.querySelector("svg.line-plot path.avg").getAttribute("d")
          .match(/[ML]/g) || []).length,
      })`);
      assert.deepEqual(counts, {
        bytes: n,
        cells: 6 * n,
        rows: 6,
        plots: 2,
        avgPoints: n, // the moving average reaches position 0 from the bytes after it
      });

      // Hover a multi-byte character's lead byte in the text.
      const i = new TextEncoder().encode(PROMPT.slice(0, PROMPT.indexOf("Æ"))).length;
      const at = await centre(page, `#text .b[data-i="${i}"]`);
      await page.mouseMove(at.x, at.y);
      const tip = await tooltip(page);
      assert.ok(tip, "no tooltip after hovering a byte");
      assert.match(tip, new RegExp(`"Æ"  byte 0xc3  position ${i}\\n`));
      assert.match(tip, /surprisal: [\d.]+ bits/);
      assert.match(tip, /discrete-A Frobenius norm, layer 0: [\d.]+/);
      const state = await page.evaluate<{ hl: string | null; cursors: number }>(`({
        hl: document.querySelector("#text .hl")?.getAttribute("data-i") ?? null,
        cursors: [...document.querySelectorAll("line.cursor")]
          .filter((l) => l.getAttribute("visibility") === "visible").length,
      })`);
      assert.deepEqual(state, { hl: String(i), cursors: 3 });

      // Hover the heatmap's row of layer 3 at position 20.
      const cell = await centre(page, `svg.heatmap g.cells[data-layer="3"] rect:nth-child(21)`);
      await page.mouseMove(cell.x, cell.y);
      const tip2 = await tooltip(page);
      assert.ok(tip2, "no tooltip after hovering the heatmap");
      assert.match(tip2, /position 20\n/);
      assert.match(tip2, /layer 3: /);

      // Leaving hides it.
      await page.mouseMove(2, 2);
      assert.equal(await tooltip(page), null);

      await page.evaluate(`window.scrollTo(0, 0)`);
      const shot = await page.screenshot();
      await Deno.writeFile(`${dir}/screenshot.png`, shot);
      const png = await pngSummary(await Deno.readFile(`${dir}/screenshot.png`));
      assert.deepEqual([png.width, png.height], [1280, 900]);
      assert.ok(png.colors > 200, `screenshot has only ${png.colors} colours`);
      assert.deepEqual(page.report.errors, []);
      assert.deepEqual(page.report.requests, [`file://${html}`]);
    } finally {
      await browser.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "visualize: --format svg writes three standalone SVGs; --format png a non-blank image",
  ignore: noChromium !== null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "mb-viz-formats-" });
    const browser = await Browser.launch();
    try {
      const src = [...MODEL, "--prompt", PROMPT, "--layer_quantity", "delta", "--layer", "4"];
      await runScriptOk("visualize.ts", [...src, "--output", `${dir}/fig.svg`]);
      const n = new TextEncoder().encode(PROMPT).length;
      const files = ["fig.heatmap.svg", "fig.surprisal.svg", "fig.delta_layer4.svg"];
      for (const f of files) {
        const text = await Deno.readTextFile(`${dir}/${f}`);
        assert.match(
          text,
          /^<\?xml version="1\.0" encoding="UTF-8"\?>\n<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/,
        );
        const page = await browser.newPage(1400, 600);
        await page.goto(`file://${dir}/${f}`);
        const rects = await page.evaluate<number>(
          `document.querySelectorAll("g.cells rect").length`,
        );
        assert.equal(rects, f.includes("heatmap") ? 6 * n : 0, f);
        assert.deepEqual(page.report.errors, [], f);
      }
      await runScriptOk("visualize.ts", [...src, "--output", `${dir}/fig.png`]);
      const png = await pngSummary(await Deno.readFile(`${dir}/fig.png`));
      assert.ok(png.width >= 1200 && png.width < 1400, `png width ${png.width}`);
      assert.ok(png.height > 600, `png height ${png.height}`);
      assert.ok(png.colors > 200, `png has only ${png.colors} colours`);
    } finally {
      await browser.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
