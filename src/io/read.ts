// deno-lint-ignore-file no-import-prefix -- see the msgpack import below
/**
 * readOutputs: reads back a result record the extraction scripts wrote (.msgpack, .pkl/.pickle or
 * .safetensors, in the layout README "Output files" documents) into one common form: tensors as
 * HostTensor, per-layer results as `Map<layer, HostTensor>`, other fields as plain values.
 *
 * @module
 */

// Versioned inline: a project importing mod.ts by URL does not see our deno.json import map.
import { Decoder } from "npm:@msgpack/msgpack@3.1.3";
import { openSafetensors } from "../checkpoint/safetensors.ts";
import { quote } from "../checkpoint/show.ts";
import { MambaByteError, printable } from "../errors.ts";
import { readPickleBytes } from "./pickle_read.ts";
import { ARRAY_OF, HOST_DTYPE_BYTES, type HostDType, type HostTensor } from "./tensor.ts";
import { isPlainObject } from "./value.ts";

/** A problem with an outputs file a user gave (missing, unreadable, not ours); exit code 1. */
export class OutputsFileError extends MambaByteError {
  /** Marks the error as caused by user input (see src/cli/main.ts). */
  readonly userFacing = true;
  /** Creates the error with a one-line message. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, 1);
    if (options?.cause !== undefined) this.cause = options.cause;
    this.name = "OutputsFileError";
  }
}

/** File extensions {@link readOutputs} reads. */
export const READABLE_EXTENSIONS: readonly string[] = [
  ".msgpack",
  ".pkl",
  ".pickle",
  ".safetensors",
];

const SAFETENSORS_HOST: Record<string, HostDType> = {
  F32: "float32",
  F64: "float64",
  I64: "int64",
  I32: "int32",
  U8: "uint8",
  BOOL: "bool",
};

function extensionOf(path: string): string {
  const base = path.slice(path.lastIndexOf("/") + 1);
  const dot = base.lastIndexOf(".");
  return dot <= 0 ? "" : base.slice(dot).toLowerCase();
}

/** A tensor over a copy of little-endian `bytes` (copied so the typed array is aligned). */
function tensorFrom(dtype: HostDType, shape: number[], bytes: Uint8Array, where: string) {
  const n = shape.reduce((a, b) => a * b, 1);
  if (n * HOST_DTYPE_BYTES[dtype] !== bytes.length) {
    throw new Error(`${where}: ${bytes.length} bytes do not hold [${shape}] ${dtype}`);
  }
  const t: HostTensor = { dtype, shape, data: new ARRAY_OF[dtype](bytes.slice().buffer) };
  return t;
}

/** msgpack's `{"dtype", "shape", "data"}` map as a tensor, or null when `v` is not one. */
function msgpackTensor(v: Record<string, unknown>, where: string): HostTensor | null {
  const keys = Object.keys(v);
  if (keys.length !== 3 || !("dtype" in v && "shape" in v && "data" in v)) return null;
  const { dtype, shape, data } = v;
  if (typeof dtype !== "string" || !(dtype in HOST_DTYPE_BYTES)) return null;
  if (!(data instanceof Uint8Array) || !Array.isArray(shape)) return null;
  if (!shape.every((d) => Number.isSafeInteger(d) && d >= 0)) return null;
  return tensorFrom(dtype as HostDType, shape as number[], data, where);
}

const INTEGER_KEY = /^-?\d+$/;

/** Normalises a decoded value: integer-keyed mappings become Maps, string-keyed ones objects. */
function normalise(v: unknown, where: string): unknown {
  if (v instanceof Uint8Array || v === null || typeof v !== "object") return v;
  if (Array.isArray(v)) return v.map((x, i) => normalise(x, `${where}[${i}]`));
  if (isHostTensor(v)) return v;
  let entries: [unknown, unknown][];
  if (v instanceof Map) {
    entries = [...v.entries()];
  } else if (isPlainObject(v)) {
    const t = msgpackTensor(v, where);
    if (t !== null) return t;
    entries = Object.entries(v);
  } else {
    throw new Error(`${where}: unexpected ${v.constructor?.name ?? typeof v} value`);
  }
  const intKeys = entries.length > 0 &&
    entries.every(([k]) =>
      (typeof k === "number" && Number.isSafeInteger(k)) ||
      (typeof k === "string" && INTEGER_KEY.test(k))
    );
  if (intKeys) {
    return new Map(entries.map(([k, x]) => [Number(k), normalise(x, `${where}[${k}]`)]));
  }
  const out: Record<string, unknown> = {};
  for (const [k, x] of entries) out[String(k)] = normalise(x, `${where}.${String(k)}`);
  return out;
}

/** A decoded tensor already (pickle); msgpack's maps hold raw bytes and fail the type check. */
function isHostTensor(v: object): v is HostTensor {
  const t = v as Partial<HostTensor>;
  return typeof t.dtype === "string" && t.dtype in ARRAY_OF && Array.isArray(t.shape) &&
    t.data instanceof ARRAY_OF[t.dtype as HostDType] &&
    t.data.length === t.shape.reduce((a: number, b: number) => a * b, 1);
}

async function readSafetensorsRecord(path: string): Promise<Record<string, unknown>> {
  const st = await openSafetensors(path);
  try {
    const record: Record<string, unknown> = {};
    for (const [name, raw] of st.tensors) {
      const dtype = SAFETENSORS_HOST[raw.dtype];
      if (dtype === undefined) throw new Error(`tensor ${quote(name)} has dtype ${raw.dtype}`);
      const t = tensorFrom(dtype, [...raw.shape], await raw.read(), `tensor ${quote(name)}`);
      // "<key>.<layer>" is a per-layer result, "<key>" a plain tensor.
      const dot = name.lastIndexOf(".");
      const tail = dot > 0 ? name.slice(dot + 1) : "";
      if (INTEGER_KEY.test(tail)) {
        const key = name.slice(0, dot);
        const m = record[key] instanceof Map ? record[key] as Map<number, unknown> : new Map();
        m.set(Number(tail), t);
        record[key] = m;
      } else {
        record[name] = t;
      }
    }
    for (const [k, json] of Object.entries(st.metadata)) {
      try {
        record[k] = normalise(JSON.parse(json), k);
      } catch {
        record[k] = json; // a metadata string another tool wrote as plain text
      }
    }
    return record;
  } finally {
    st.close();
  }
}

/**
 * Reads an outputs file by its extension. A missing file, an unknown extension, or a file that
 * is not a record in this toolkit's layout is an {@link OutputsFileError} with one clear line.
 *
 * @example
 * ```ts ignore
 * import { readOutputs } from "./read.ts";
 * const rec = await readOutputs("artefacts/dA_860_fro.msgpack");
 * const layer0 = (rec.discrete_A as Map<number, unknown>).get(0);
 * ```
 */
export async function readOutputs(path: string): Promise<Record<string, unknown>> {
  const ext = extensionOf(path);
  if (!READABLE_EXTENSIONS.includes(ext)) {
    throw new OutputsFileError(
      `cannot read outputs file ${path}: unknown extension '${ext || path}' (use ${
        READABLE_EXTENSIONS.join(", ")
      })`,
    );
  }
  const info = await Deno.stat(path).catch((e) => {
    if (e instanceof Deno.errors.NotFound) {
      throw new OutputsFileError(`outputs file not found: ${path}`, { cause: e });
    }
    throw new OutputsFileError(`cannot read outputs file ${path}: ${e.message}`, { cause: e });
  });
  if (!info.isFile) throw new OutputsFileError(`outputs file is not a file: ${path}`);
  let value: unknown;
  try {
    if (ext === ".safetensors") {
      value = await readSafetensorsRecord(path);
    } else {
      const bytes = await Deno.readFile(path);
      value = ext === ".msgpack" ? new Decoder().decode(bytes) : readPickleBytes(bytes, "pickle");
      value = normalise(value, "record");
    }
  } catch (e) {
    const why = printable((e as Error).message.replace(`${path}: `, ""), 300);
    throw new OutputsFileError(`cannot read outputs file ${path}: ${why}`, { cause: e });
  }
  if (value instanceof Map) value = Object.fromEntries(value);
  if (!isPlainObject(value)) {
    throw new OutputsFileError(
      `cannot read outputs file ${path}: it holds no record (a map of fields)`,
    );
  }
  return value;
}
