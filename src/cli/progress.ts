/**
 * Progress display on stderr for long work (loading, prefill, extraction). It draws only when
 * stderr is a terminal and quiet mode is off, so logs and pipes stay clean.
 *
 * @module
 */

/** A running progress display. */
export interface Progress {
  /** Advances by `n` steps (default 1). */
  tick(n?: number): void;
  /** Finishes the line (or does nothing when silent). */
  done(): void;
}

let quietMode = false;

/** Turns quiet mode on or off for every later {@link progress} (from --quiet). */
export function setQuiet(quiet: boolean): void {
  quietMode = quiet;
}

const SILENT: Progress = { tick() {}, done() {} };

/** Options of {@link progress}. */
export interface ProgressOptions {
  /** Overrides the global quiet mode. */
  quiet?: boolean;
  /** Draw even when stderr is not a terminal (tests). */
  force?: boolean;
  /** Where to draw (stderr by default). */
  write?: (text: string) => void;
}

function fmtCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return String(n);
}

/**
 * Starts a progress bar `label [####----] 42% 420/1000 12.3/s`, redrawn at most 10 times a second.
 *
 * @example
 * ```ts
 * import { progress } from "./progress.ts";
 * const p = progress("prefill", 1000);
 * for (let i = 0; i < 1000; i += 100) p.tick(100);
 * p.done();
 * ```
 */
export function progress(label: string, total: number, opts: ProgressOptions = {}): Progress {
  const quiet = opts.quiet ?? quietMode;
  let tty = false;
  try {
    tty = Deno.stderr.isTerminal();
  } catch {
    tty = false;
  }
  if (quiet || !(tty || opts.force)) return SILENT;
  const enc = new TextEncoder();
  const write = opts.write ?? ((s: string) => void Deno.stderr.writeSync(enc.encode(s)));
  const start = performance.now();
  let count = 0;
  let last = 0;
  let finished = false;
  const draw = () => {
    const secs = (performance.now() - start) / 1000;
    const rate = secs > 0 ? `${fmtCount(Math.round(count / secs))}/s` : "";
    const frac = total > 0 ? Math.min(1, count / total) : 0;
    const width = 24;
    const fill = Math.round(frac * width);
    const bar = "#".repeat(fill) + "-".repeat(width - fill);
    const pct = `${Math.floor(frac * 100)}%`.padStart(4);
    write(`\r${label} [${bar}] ${pct} ${fmtCount(count)}/${fmtCount(total)} ${rate}\x1b[K`);
  };
  return {
    tick(n = 1) {
      if (finished) return;
      count += n;
      const now = performance.now();
      if (now - last >= 100 || count >= total) {
        last = now;
        draw();
      }
    },
    done() {
      if (finished) return;
      finished = true;
      draw();
      write("\n");
    },
  };
}
