/**
 * The C header is the one source of the ABI: csrc/include/mambabyte.h is parsed here, and
 * src/native/lib.ts must agree with it — the functions (names, order, argument count and kinds,
 * result), the status codes, the enum and flag values, the ABI version and which functions are
 * test-only. csrc/common/ops.def (the backends' prototypes) may only name functions of the header.
 * The last test feeds edited copies of the header to the same comparison, so it is known to bite.
 */
import assert from "node:assert/strict";
import {
  ABI_VERSION,
  BackendCode,
  DecodeLayerPtr,
  DTypeCode,
  Flag,
  NormCode,
  ReduceCode,
  Status,
  SYMBOLS,
  TEST_ONLY_SYMBOLS,
} from "../src/native/lib.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const HEADER = await Deno.readTextFile(`${ROOT}csrc/include/mambabyte.h`);
const OPS_DEF = await Deno.readTextFile(`${ROOT}csrc/common/ops.def`);

/** What a C type is across the ABI. */
type Kind = "handle" | "pointer" | "i32" | "u32" | "i64" | "u64" | "usize" | "f32" | "f64";

/** A function of the header. */
interface CFunction {
  name: string;
  params: Kind[];
  result: Kind;
  testOnly: boolean;
}

/** The parsed header. */
interface Header {
  functions: CFunction[];
  /** #define MB_NAME value (integers only). */
  defines: Map<string, number>;
}

const SCALARS: Record<string, Kind> = {
  int: "i32",
  int32_t: "i32",
  uint32_t: "u32",
  int64_t: "i64",
  uint64_t: "u64",
  size_t: "usize",
  float: "f32",
  double: "f64",
};

function kindOf(type: string, where: string): Kind {
  const t = type.replace(/\bconst\b/g, "").replace(/\s+/g, " ").trim();
  if (t.includes("*")) return /^mb_ctx \*$/.test(t) ? "handle" : "pointer";
  const k = SCALARS[t];
  if (!k) throw new Error(`${where}: C type '${type}' has no ABI kind (add it to SCALARS)`);
  return k;
}

/** Parses the function prototypes and integer #defines of a C header. */
function parseHeader(text: string): Header {
  const marker = text.search(/\/\* -+ test-only/);
  const defines = new Map<string, number>();
  for (const m of text.matchAll(/^#define\s+(MB_\w+)\s+(\S+)/gm)) {
    const v = m[2].replace(/u$/i, "");
    if (/^-?\d+$/.test(v)) defines.set(m[1], Number(v));
  }
  // Blank out comments and preprocessor lines, keeping offsets for the test-only marker.
  const code = text
    .replace(/\/\*[\s\S]*?\*\//g, (c) => c.replace(/[^\n]/g, " "))
    .replace(/\/\/[^\n]*/g, (c) => " ".repeat(c.length))
    .replace(/^#[^\n]*/gm, (c) => " ".repeat(c.length));
  const functions: CFunction[] = [];
  for (const m of code.matchAll(/([A-Za-z_][\w\s*]*?)\b(mb_\w+)\s*\(([^)]*)\)\s*;/g)) {
    const name = m[2];
    const params = m[3].trim() === "void" ? [] : m[3].split(",").map((p, i) => {
      const decl = p.trim().replace(/\s+/g, " ");
      const type = decl.replace(/\b\w+$/, ""); // drop the parameter name
      return kindOf(type, `${name} parameter ${i}`);
    });
    const result = kindOf(m[1], `${name} result`);
    functions.push({ name, params, result, testOnly: marker >= 0 && m.index! > marker });
  }
  return { functions, defines };
}

/** Deno FFI types each ABI kind may be bound as. */
const ALLOWED: Record<Kind, readonly string[]> = {
  handle: ["pointer"], // an mb_ctx* is passed as the PointerObject mb_ctx_create gave
  pointer: ["pointer", "buffer"],
  i32: ["i32"],
  u32: ["u32"],
  i64: ["i64"],
  u64: ["u64"],
  usize: ["usize"],
  f32: ["f32"],
  f64: ["f64"],
};

/** lib.ts's view of the ABI, as the comparison reads it. */
interface Bindings {
  symbols: Record<string, { parameters: readonly string[]; result: string }>;
  testOnly: readonly string[];
  abiVersion: number;
  /** header prefix -> lib.ts table (key = the define's name after the prefix). */
  groups: [prefix: string, table: Record<string, number>][];
}

const BINDINGS: Bindings = {
  symbols: SYMBOLS,
  testOnly: TEST_ONLY_SYMBOLS,
  abiVersion: ABI_VERSION,
  groups: [
    ["MB_ERR_", Status],
    ["MB_BACKEND_", BackendCode],
    ["MB_DTYPE_", DTypeCode],
    ["MB_NORM_", NormCode],
    ["MB_REDUCE_", ReduceCode],
    ["MB_FLAG_", Flag],
    ["MB_DL_", DecodeLayerPtr],
  ],
};

/** Every disagreement between a header's text and the bindings (empty when they agree). */
function compareAbi(text: string, b: Bindings): string[] {
  const problems: string[] = [];
  const h = parseHeader(text);
  const cNames = h.functions.map((f) => f.name);
  const tsNames = Object.keys(b.symbols);
  if (cNames.join() !== tsNames.join()) {
    const missing = cNames.filter((n) => !tsNames.includes(n));
    const extra = tsNames.filter((n) => !cNames.includes(n));
    problems.push(
      `functions differ: not in lib.ts [${missing}], not in the header [${extra}]` +
        (missing.length + extra.length === 0 ? " (order)" : ""),
    );
  }
  for (const f of h.functions) {
    const s = b.symbols[f.name];
    if (!s) continue;
    if (s.parameters.length !== f.params.length) {
      problems.push(`${f.name}: ${f.params.length} parameters in C, ${s.parameters.length} in TS`);
    } else {
      f.params.forEach((k, i) => {
        if (!ALLOWED[k].includes(s.parameters[i])) {
          problems.push(`${f.name} parameter ${i}: C ${k}, TS "${s.parameters[i]}"`);
        }
      });
    }
    if (!ALLOWED[f.result].includes(s.result)) {
      problems.push(`${f.name} result: C ${f.result}, TS "${s.result}"`);
    }
  }
  const cTestOnly = h.functions.filter((f) => f.testOnly).map((f) => f.name).sort();
  if (cTestOnly.join() !== [...b.testOnly].sort().join()) {
    problems.push(`test-only functions: header [${cTestOnly}], lib.ts [${b.testOnly}]`);
  }
  const version = h.defines.get("MB_ABI_VERSION");
  if (version !== b.abiVersion) problems.push(`ABI version: C ${version}, TS ${b.abiVersion}`);
  const covered = new Set(["MB_ABI_VERSION"]);
  for (const [prefix, table] of b.groups) {
    const names = [...h.defines.keys()].filter((n) => n.startsWith(prefix));
    if (prefix === "MB_ERR_") names.push("MB_OK");
    for (const name of names) {
      covered.add(name);
      const key = name === "MB_OK" ? "OK" : name.slice(prefix.length);
      if (table[key] !== h.defines.get(name)) {
        problems.push(`${name} = ${h.defines.get(name)} in C, ${table[key]} in TS`);
      }
    }
    for (const [key, value] of Object.entries(table)) {
      const name = key === "OK" && prefix === "MB_ERR_" ? "MB_OK" : prefix + key;
      if (!h.defines.has(name)) problems.push(`TS ${key} = ${value}: no ${name} in the header`);
    }
  }
  for (const name of h.defines.keys()) {
    if (!covered.has(name)) problems.push(`${name}: a define lib.ts does not mirror`);
  }
  return problems;
}

Deno.test("src/native/lib.ts agrees with csrc/include/mambabyte.h", () => {
  const h = parseHeader(HEADER);
  assert.ok(h.functions.length >= 30, `only ${h.functions.length} functions parsed`);
  const dt = h.functions.find((f) => f.name === "mb_selective_state_update_dt");
  assert.equal(dt?.params.length, 26, "the parser lost parameters of a long prototype");
  assert.deepEqual(compareAbi(HEADER, BINDINGS), []);
});

Deno.test("csrc/common/ops.def names only functions of the header", () => {
  const names = new Set(parseHeader(HEADER).functions.map((f) => f.name));
  const entries = [...OPS_DEF.matchAll(/^MB_(?:CUDA_)?OP\((\w+)\)/gm)].map((m) => m[1]);
  assert.ok(entries.length >= 20, `only ${entries.length} entries parsed`);
  for (const e of entries) assert.ok(names.has(`mb_${e}`), `ops.def: no mb_${e} in the header`);
  assert.equal(new Set(entries).size, entries.length, "ops.def lists an op twice");
});

Deno.test("the comparison bites: edited headers disagree with lib.ts", () => {
  const abi = Number(/#define MB_ABI_VERSION (\d+)/.exec(HEADER)?.[1]);
  const edits: [string, string, string, RegExp][] = [
    ["an argument's type", "int64_t in_f, int64_t out_f,", "int in_f, int64_t out_f,", /mb_linear/],
    ["a dropped argument", ", float *sink);", ");", /mb_read_probe: 3 parameters/],
    ["a result type", "float mb_uniform(", "double mb_uniform(", /mb_uniform result/],
    ["a status code", "#define MB_ERR_OOM 2", "#define MB_ERR_OOM 7", /MB_ERR_OOM = 7/],
    ["a flag", "#define MB_FLAG_ALLOW_TF32 1u", "#define MB_FLAG_ALLOW_TF32 4u", /ALLOW_TF32/],
    [
      "the ABI version",
      `#define MB_ABI_VERSION ${abi}`,
      `#define MB_ABI_VERSION ${abi + 1}`,
      /ABI version/,
    ],
    ["a new define", "#define MB_NORM_RMS 1", "#define MB_NORM_RMS 1\n#define MB_NORM_X 2", /X/],
    ["a handle", "int mb_ctx_destroy(mb_ctx *ctx);", "int mb_ctx_destroy(int ctx);", /destroy/],
    ["a new function", "int mb_has_cuda(void);", "int mb_has_cuda(void);\nint mb_x(void);", /mb_x/],
    ["test-only", "/* ---- test-only", "/* ---- for tests", /test-only functions/],
  ];
  for (const [what, from, to, says] of edits) {
    assert.ok(HEADER.includes(from), `${what}: '${from}' is not in the header any more`);
    const problems = compareAbi(HEADER.replace(from, to), BINDINGS);
    assert.ok(problems.some((p) => says.test(p)), `${what}: not caught (${problems})`);
  }
  // and a handle bound as a buffer
  const symbols = {
    ...BINDINGS.symbols,
    mb_graph_begin: { parameters: ["buffer"], result: "i32" },
  };
  assert.match(compareAbi(HEADER, { ...BINDINGS, symbols }).join("\n"), /mb_graph_begin/);
});
