/**
 * Module-output taps downloaded while the layers after them run. Each tap is copied with
 * {@link Backend.downloadAsync} into a host buffer from {@link Backend.hostAlloc} (page-locked on
 * CUDA, where the transfer runs on a copy stream from a staging copy, overlapping the next
 * layers); at most `depth` are in flight. When a new tap needs a buffer the oldest is waited for
 * and copied into its destination, and {@link TapPipeline.drain} finishes the rest. A destination
 * in an array the {@link HostRegistry} holds registered is downloaded into directly (no host
 * buffer, no copy). The bytes are those a synchronous download at the same point would give.
 *
 * @module
 */
import type { Backend, Ptr } from "../backend/backend.ts";
import type { HostRegistry } from "./host_registry.ts";

interface HostBuffer {
  ptr: Ptr;
  bytes: number;
}

interface InFlight {
  ticket: bigint;
  /** null: downloaded straight into dst (registered) */
  buf: HostBuffer | null;
  dst: Float32Array;
  done: (dst: Float32Array) => void;
}

/** Downloads in flight through a small pool of host buffers (see the module's doc). */
export class TapPipeline {
  readonly #be: Backend;
  readonly #depth: number;
  readonly #registry: HostRegistry | undefined;
  #free: HostBuffer[] = [];
  #inFlight: InFlight[] = [];

  /**
   * `depth`: downloads in flight at most (each holds a host buffer of its size, unless it goes
   * straight into an array `registry` holds registered).
   */
  constructor(backend: Backend, depth = 4, registry?: HostRegistry) {
    if (!(depth >= 1)) throw new RangeError(`TapPipeline: depth ${depth} < 1`);
    this.#be = backend;
    this.#depth = depth;
    this.#registry = registry;
  }

  /** Downloads in flight now. */
  get pending(): number {
    return this.#inFlight.length;
  }

  /**
   * Starts downloading dst.length floats at src (backend memory) into dst; `done(dst)` runs once
   * they are there (from a later push, or from drain), in push order.
   */
  push(src: Ptr, dst: Float32Array, done: (dst: Float32Array) => void): void {
    if (this.#inFlight.length >= this.#depth) this.#retire();
    if (this.#registry?.covers(dst)) {
      const ticket = this.#be.downloadAsync(Deno.UnsafePointer.of(dst), src, dst.byteLength);
      this.#inFlight.push({ ticket, buf: null, dst, done });
      return;
    }
    const buf = this.#take(dst.byteLength);
    let ticket: bigint;
    try {
      ticket = this.#be.downloadAsync(buf.ptr, src, dst.byteLength);
    } catch (e) {
      this.#free.push(buf);
      throw e;
    }
    this.#inFlight.push({ ticket, buf, dst, done });
  }

  /** Waits for every download in flight and delivers it. */
  drain(): void {
    while (this.#inFlight.length) this.#retire();
  }

  /** Waits for the downloads in flight without delivering them (after a failure). */
  abandon(): void {
    const all = this.#inFlight;
    this.#inFlight = [];
    for (const f of all) {
      try {
        this.#be.downloadWait(f.ticket);
      } catch {
        // the pass is failing already; the buffer still goes back to the pool
      }
      if (f.buf) this.#free.push(f.buf);
    }
  }

  /** Waits for what is in flight and frees the host buffers. */
  free(): void {
    this.abandon();
    for (const b of this.#free) this.#be.hostFree(b.ptr);
    this.#free = [];
  }

  #retire(): void {
    const f = this.#inFlight.shift()!;
    try {
      this.#be.downloadWait(f.ticket);
      if (f.buf) this.#be.hostCopy(f.dst, f.buf.ptr);
    } finally {
      if (f.buf) this.#free.push(f.buf);
    }
    f.done(f.dst);
  }

  /** A free buffer of at least `bytes` (the smallest that fits), else a new one. */
  #take(bytes: number): HostBuffer {
    let best = -1;
    for (let i = 0; i < this.#free.length; i++) {
      const b = this.#free[i];
      if (b.bytes >= bytes && (best < 0 || b.bytes < this.#free[best].bytes)) best = i;
    }
    if (best >= 0) return this.#free.splice(best, 1)[0];
    // Keep the pool bounded: a free buffer that is too small makes way for the new one.
    if (this.#free.length + this.#inFlight.length > this.#depth) {
      const old = this.#free.shift()!;
      this.#be.hostFree(old.ptr);
    }
    // Round up so that a chunk a little longer than the last one reuses its buffer.
    const size = bytes === 0 ? 0 : Math.ceil(bytes / 65536) * 65536;
    return { ptr: size ? this.#be.hostAlloc(size) : null, bytes: size };
  }
}
