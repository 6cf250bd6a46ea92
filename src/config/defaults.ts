/**
 * The one table of defaults and bounds. A setting comes from the command-line flag, else the
 * config file, else {@link DEFAULTS}; the bounds keep every value inside what the kernels and the
 * host can do, so a bad value is refused before any work (never an internal error later).
 *
 * @module
 */

/** Built-in defaults (the original scripts' where they have one). */
export const DEFAULTS = {
  /** general.device */
  device: "auto",
  /** general.dtype */
  dtype: "fp32",
  /** --seed / general.seed (the original scripts' default). */
  seed: 4740,
  /** general.threads: 0 = every CPU this process may run on. */
  threads: 0,
  /** --max_new_tokens / generation.max_new_tokens */
  max_new_tokens: 100,
  /** --num_samples / generation.num_samples */
  num_samples: 1,
  /** --temperature / generation.temperature */
  temperature: 1.0,
  /** --top_k / generation.top_k (0: off) */
  top_k: 256,
  /** --top_p / generation.top_p (0: off) */
  top_p: 0.98,
  /** --draft_length: bytes drafted per verification pass in speculative decoding */
  draft_length: 7,
  /** model.*.norm_epsilon / norm_eps */
  norm_epsilon: 1e-5,
  /** model.*.chunk_size: positions per forward chunk ("auto": by device, model/chunk_size.ts) */
  chunk_size: "auto",
  /** The model id used when neither --model_id nor model.default_model_id names one. */
  model_id: "972M",
  /** run_corpus.ts --attempts: tries per document before it is recorded as failed. */
  attempts: 3,
  /** run_corpus.ts --backoff_ms: the first retry's delay, doubled for each later one. */
  backoff_ms: 1000,
  /**
   * run_corpus.ts --lock_ms: how long a queue worker's claim on a document lasts unless renewed
   * (it is renewed every half of it while the document runs); a killed worker's document is
   * taken again after at most this plus two --stalled_ms.
   */
  lock_ms: 60_000,
  /** run_corpus.ts --stalled_ms: how often queue workers look for documents of dead workers. */
  stalled_ms: 30_000,
} as const;

/** Inclusive bounds of integer settings; the upper bounds are far above any MambaByte. */
export const BOUNDS: Readonly<Record<string, readonly [number, number]>> = {
  vocab_size: [256, 65536],
  d_model: [1, 16384],
  n_layer: [1, 1024],
  d_state: [1, 256],
  d_conv: [1, 64],
  expand: [1, 16],
  dt_rank: [1, 4096],
  chunk_size: [1, 1 << 20],
  threads: [0, 1024],
  max_new_tokens: [0, 1 << 30],
  num_samples: [1, 4096],
  top_k: [0, 256],
  draft_length: [1, 64],
  context: [1, 1 << 24],
  /** N of --device cuda:N (far above the GPUs of one host). */
  device_index: [0, 1023],
  attempts: [1, 100],
  backoff_ms: [0, 3_600_000],
  // A lock shorter than a second is lost to a busy event loop; a day is beyond any document.
  lock_ms: [1000, 86_400_000],
  stalled_ms: [100, 86_400_000],
};

/** Temperatures outside this range overflow or underflow float32 logits (0 is greedy). */
export const TEMPERATURE_RANGE = [1e-6, 1e6] as const;

/** A corpus run's documents larger than this are refused (each is read whole). */
export const MAX_DOCUMENT_BYTES = 1 << 30;

/** Documents of a corpus run: more than this is a listing gone wrong (split the corpus). */
export const MAX_CORPUS_DOCUMENTS = 1_000_000;

/** A manifest of a corpus run (one path per line) larger than this is not a manifest. */
export const MAX_MANIFEST_BYTES = 256 << 20;

/**
 * Checks an integer setting against {@link BOUNDS}; returns an error message, or null when fine.
 * `name` is the key in BOUNDS; `label` is how the message names the setting.
 */
export function checkBounded(name: string, value: unknown, label = name): string | null {
  const [lo, hi] = BOUNDS[name];
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < lo || value > hi) {
    return `${label} must be an integer from ${lo} to ${hi} (got ${describe(value)})`;
  }
  return null;
}

/** A value as a short string for messages (never more than 40 characters). */
export function describe(value: unknown): string {
  let s: string;
  try {
    s = typeof value === "number" ? String(value) : JSON.stringify(value) ?? String(value);
  } catch {
    s = String(value);
  }
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}
