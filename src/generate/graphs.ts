/**
 * Replays fixed sequences of backend ops as CUDA graphs, one per key. The first run of a key is
 * direct (kernels load, scratch buffers reach their size), the second is captured, and every
 * later one replays the capture. Backends without graphs (the CPU) run the body each time.
 *
 * @module
 */

import type { Backend } from "../backend/backend.ts";

/** Graphs by key for one backend; {@link GraphCache.free} destroys them. */
export class GraphCache<K> {
  readonly #be: Backend;
  readonly #enabled: boolean;
  readonly #graphs = new Map<K, number>();
  readonly #seen = new Set<K>();

  /** `enabled` false runs every body directly (for A/B runs and tests). */
  constructor(be: Backend, enabled = true) {
    this.#be = be;
    this.#enabled = enabled && be.supportsGraphs;
  }

  /**
   * Runs `body`'s ops for `key`: directly, captured, or replayed (see the module comment). Keys
   * whose bodies run the same ops on other buffers can share a `warmup` key: once one of them has
   * run directly, the others are captured on their first run.
   */
  run(key: K, body: () => void, warmup: K = key): void {
    if (!this.#enabled) return body();
    let g = this.#graphs.get(key);
    if (g === undefined && !this.#seen.has(warmup)) {
      this.#seen.add(warmup);
      return body();
    }
    if (g === undefined) {
      this.#be.graphBegin();
      try {
        body();
      } finally {
        g = this.#be.graphEnd();
        this.#graphs.set(key, g);
      }
    }
    this.#be.graphLaunch(g);
  }

  /** Destroys every captured graph. */
  free(): void {
    for (const g of this.#graphs.values()) this.#be.graphDestroy(g);
    this.#graphs.clear();
    this.#seen.clear();
  }
}
