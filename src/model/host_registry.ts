/**
 * Result arrays registered with the backend as download destinations ({@link Backend.hostRegister}):
 * on CUDA a module output's chunk then goes from the device straight into its place in the result,
 * with no copy on the host. Registration pins the memory and costs about a first touch, so it pays
 * for arrays that are filled again and again (an earlier result passed back as `into`). The
 * registry keeps one set: {@link HostRegistry.keepOnly} registers the new arrays and unregisters
 * the others, and it holds the registered arrays (their memory must outlive the registration)
 * until then or until {@link HostRegistry.clear}.
 *
 * @module
 */
import type { Backend } from "../backend/backend.ts";

/** Arrays smaller than this stay unregistered (two small arrays may share a page). */
export const MIN_REGISTERED_BYTES = 1 << 20;

/** The registered arrays of one backend (see the module's doc). */
export class HostRegistry {
  readonly #be: Backend;
  readonly #registered = new Map<ArrayBufferLike, Uint8Array>();
  readonly #refused = new WeakSet<ArrayBufferLike>();

  constructor(backend: Backend) {
    this.#be = backend;
  }

  /** Registered bytes now. */
  get bytes(): number {
    let n = 0;
    for (const v of this.#registered.values()) n += v.byteLength;
    return n;
  }

  /** True when `view` lies in a registered array. */
  covers(view: ArrayBufferView): boolean {
    return this.#registered.has(view.buffer);
  }

  /**
   * Makes `buffers` (those of at least MIN_REGISTERED_BYTES) the registered set: registers the
   * new ones, unregisters the rest. A buffer the backend refuses stays unregistered (its downloads
   * take the staged path) and is not tried again.
   */
  keepOnly(buffers: Iterable<ArrayBufferLike>): void {
    const want = new Set<ArrayBufferLike>();
    for (const b of buffers) {
      if (b.byteLength >= MIN_REGISTERED_BYTES && !this.#refused.has(b)) want.add(b);
    }
    for (const [b, view] of [...this.#registered]) {
      if (!want.has(b)) {
        this.#registered.delete(b);
        this.#be.hostUnregister(view);
      }
    }
    for (const b of want) {
      if (this.#registered.has(b)) continue;
      const view = new Uint8Array(b);
      try {
        this.#be.hostRegister(view);
        this.#registered.set(b, view);
      } catch {
        this.#refused.add(b);
      }
    }
  }

  /** Unregisters everything (the arrays may then be let go). */
  clear(): void {
    this.keepOnly([]);
  }
}
