/**
 * visualize.ts on the three PG19 samples of the paper's Appendix F (860, 3247, 4128; 6-10 KB) on
 * the bundled `tiny` model on the CPU, computing both per-layer quantities (the slowest setting):
 * each page carries every byte and every layer, and the time each run took is printed. The
 * 10 KB page then opens in Chromium: all cells render, and hovering a byte near the end scrolls
 * the figures to it.
 */
import assert from "node:assert/strict";
import { Browser, chromiumMissing } from "../src/viz/chromium.ts";
import { exists, REPO_ROOT, runScriptOk } from "./helpers/scripts.ts";
import { centre, openPage, pageData, tooltip } from "./helpers/viz.ts";

const SAMPLES = ["860", "3247", "4128"];
const DIR = `${REPO_ROOT}/../shared/pg19_samples`;
const missing: string[] = [];
for (const s of SAMPLES) if (!(await exists(`${DIR}/${s}.txt`))) missing.push(`${s}.txt`);
if (missing.length) console.warn(`viz_pg19_test skipped: ${DIR} lacks ${missing.join(", ")}`);
const noChromium = chromiumMissing();

Deno.test({
  name: "visualize: the three PG19 samples on tiny (CPU), and the 10 KB page in Chromium",
  ignore: missing.length > 0,
  async fn(t) {
    const dir = await Deno.makeTempDir({ prefix: "mb-viz-pg19-" });
    try {
      for (const s of SAMPLES) {
        await t.step(`${s}.txt`, async () => {
          const t0 = performance.now();
          await runScriptOk("visualize.ts", [
            ...["--model_id", "tiny", "--device", "cpu", "--quiet"],
            ...["--prompt_file", `${DIR}/${s}.txt`, "--color_by", "discrete_A"],
            ...["--layer_quantity", "delta", "--layer", "5", "--output", `${dir}/${s}.html`],
          ]);
          const secs = (performance.now() - t0) / 1000;
          const d = pageData(await Deno.readTextFile(`${dir}/${s}.html`));
          const n = (await Deno.stat(`${DIR}/${s}.txt`)).size;
          assert.equal(d.bytes.length, n);
          for (const q of [d.discrete_A_fro!, d.delta_mean!]) {
            assert.deepEqual(Object.keys(q), ["0", "1", "2", "3", "4", "5"]);
            assert.ok(Object.values(q).every((v) => v.length === n));
          }
          console.log(`  ${s}.txt: ${n} bytes, page made in ${secs.toFixed(1)} s`);
        });
      }
      await t.step({
        name: "4128.html in Chromium",
        ignore: noChromium !== null,
        fn: async () => {
          const browser = await Browser.launch();
          try {
            const n = (await Deno.stat(`${DIR}/4128.txt`)).size;
            const page = await openPage(browser, `${dir}/4128.html`);
            const c = await page.evaluate<Record<string, number>>(`({
              bytes: document.querySelectorAll("#text .b").length,
              cells: document.querySelectorAll("svg.heatmap g.cells rect").length,
              scrolls: document.querySelector(".plots").scrollWidth >
                document.querySelector(".plots").clientWidth + 1000 ? 1 : 0,
            })`);
            assert.deepEqual(c, { bytes: n, cells: 6 * n, scrolls: 1 });
            const last = n - 5;
            const at = await centre(page, `#text .b[data-i="${last}"]`);
            await page.mouseMove(at.x, at.y);
            assert.match((await tooltip(page)) ?? "", new RegExp(`position ${last}\\n`));
            const left = await page.evaluate<number>(`document.querySelector(".plots").scrollLeft`);
            assert.ok(left > 1000, `the figures did not scroll to the byte (scrollLeft ${left})`);
            assert.deepEqual(page.report.errors, []);
          } finally {
            await browser.close();
          }
        },
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
