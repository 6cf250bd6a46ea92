/**
 * Caps on the work a checkpoint may ask of the readers, set from what a Mamba checkpoint needs
 * rather than what a format allows, so a small hostile file cannot make a reader spend minutes or
 * gigabytes before it says no.
 *
 * A 972M-parameter MambaByte (48 layers) has about 630 tensors; Mamba 2.8B (64 layers) about 830;
 * a training checkpoint with Adam's two moments beside each parameter about three times that. The
 * caps leave a wide margin over all of these.
 *
 * @module
 */

/** Most tensors in one checkpoint file: ~20x a 2.8B Mamba, ~6x one with its optimizer state. */
export const MAX_TENSORS = 16_384;

/** Most entries in a torch.save zip: its storages (at most one per tensor) and a few records. */
export const MAX_ZIP_ENTRIES = MAX_TENSORS + 64;

/** Largest zip central directory: MAX_ZIP_ENTRIES entries with names of up to ~450 bytes. */
export const MAX_CENTRAL_DIR_BYTES = 8 << 20;

/**
 * Largest safetensors JSON header: 8 MiB. A 972M MambaByte's header is ~70 KB (one ~110-byte
 * entry per tensor); MAX_TENSORS entries with long names and metadata stay under 4 MiB. (The
 * format itself allows 100 MB, which costs seconds and ~1.4 GB to parse.)
 */
export const MAX_SAFETENSORS_HEADER_BYTES = 8 << 20;

/**
 * Largest total of DEFLATE data inflated from one zip archive: 256 MiB. torch.save never
 * compresses (every entry is STORED), so compressed entries only come from archives re-zipped by
 * hand; more than this from a small file is a decompression bomb.
 */
export const MAX_INFLATED_BYTES = 256 << 20;

/** Largest config.json of a Hugging Face folder: 1 MiB (real ones are about 1 KB). */
export const MAX_HF_CONFIG_BYTES = 1 << 20;

/** Largest *.index.json of a sharded folder: 8 MiB (~60 bytes per tensor; MAX_TENSORS is ~1 MB). */
export const MAX_HF_INDEX_BYTES = 8 << 20;
