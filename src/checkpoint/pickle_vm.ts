/**
 * The restricted pickle machine both of the toolkit's pickle readers run: the checkpoint
 * unpickler (./unpickle.ts: torch.save's pickles) and the outputs reader (src/io/pickle_read.ts:
 * the toolkit's own .pkl files). It decodes the data opcodes (numbers, strings, bytes, tuples,
 * lists, dicts, the memo, MARK frames) itself and never executes anything: GLOBAL, REDUCE, NEWOBJ,
 * BUILD and BINPERSID go to the reader's {@link PickleRules}, which allow-list the few names and
 * constructors it understands; an opcode without a rule is refused. The stack (all MARK frames
 * together), the memo, the items put in containers, the bytes of strings, and nesting are bounded
 * in total by the rules' limits, so a hostile pickle cannot exhaust memory or recursion however it
 * repeats DUP or MEMOIZE; every opcode consumes input, so it terminates.
 *
 * It imports nothing of the checkpoint module: the readers bring their own values, error types and
 * wording.
 *
 * @module
 */

/**
 * Values the machine produces: Python's None, bool, int (a bigint beyond 2^53), float, str and
 * bytes; tuples and lists (both arrays) and dicts (Maps, keys keeping their type); and `X`, what
 * the reader's rules make of globals and calls.
 */
export type PickleValue<X> =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PickleValue<X>[]
  | Map<PickleValue<X>, PickleValue<X>>
  | X;

/** Throws the reader's error for a message (the machine prefixes the reader's label). */
export type PickleFail = (message: string) => never;

/** Bounds that keep a hostile pickle cheap (Infinity: unbounded). */
export interface PickleLimits {
  /** Nested MARKs. */
  maxMarkDepth: number;
  /** Values on the stack, counting every MARK frame. */
  maxStack: number;
  /** Memo entries. */
  maxMemo: number;
  /** Items put into lists, tuples and dicts (a dict entry counts as two), over the whole pickle. */
  maxItems: number;
  /** Bytes of all strings and bytes objects made, over the whole pickle. */
  maxBytes: number;
  /** Nesting of containers inside containers. */
  maxNesting: number;
}

/** What one reader accepts beyond plain data, and how it reports failures. */
export interface PickleRules<X> {
  /** Names the input at the start of every error message (`<label>: <message>`). */
  label: string;
  /** Makes the error to throw; `truncated` when the pickle ended early (the data may go on). */
  error: (message: string, truncated: boolean) => Error;
  /** Ends the message for an opcode the machine or these rules do not take. */
  unsupported: string;
  limits: PickleLimits;
  /** Copy bytes objects out of the input (else they are views of it). */
  copyBytes: boolean;
  /** GLOBAL and STACK_GLOBAL: the value for an allow-listed name; fails on any other. */
  global: (module: string, name: string, fail: PickleFail) => PickleValue<X>;
  /** REDUCE: applies an allow-listed callable (what `global` made) to its arguments. */
  reduce: (fn: PickleValue<X>, args: PickleValue<X>, fail: PickleFail) => PickleValue<X>;
  /** NEWOBJ, if taken. */
  newObject?: (cls: PickleValue<X>, args: PickleValue<X>, fail: PickleFail) => PickleValue<X>;
  /** BUILD, if taken: gives `obj` (left on the stack) its `state`. */
  build?: (obj: PickleValue<X>, state: PickleValue<X>, fail: PickleFail) => void;
  /** BINPERSID, if taken: resolves a persistent id (torch: a storage tuple). */
  persistentLoad?: (pid: PickleValue<X>) => PickleValue<X>;
}

/**
 * Runs the pickle starting at byte `start` of `data` (several pickles may follow one another, as
 * in torch's legacy format); returns the object and the offset just past its STOP.
 */
export function runPickle<X>(
  data: Uint8Array,
  start: number,
  rules: PickleRules<X>,
): { value: PickleValue<X>; end: number } {
  type V = PickleValue<X>;
  const lim = rules.limits;
  const { label } = rules;
  const fail = (msg: string): never => {
    throw rules.error(`${label}: ${msg}`, false);
  };
  const truncated = (msg: string): never => {
    throw rules.error(`${label}: ${msg}`, true);
  };
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const latin1 = new TextDecoder("latin1");
  let pos = start;
  let stack: V[] = [];
  const metastack: V[][] = [];
  /** Values on the stack including every MARK frame below the current one. */
  let held = 0;
  let items = 0;
  let madeBytes = 0;
  const memo = new Map<number, V>();
  const depth = new WeakMap<object, number>();

  const need = (n: number) => {
    if (n < 0) fail(`negative length in pickle at byte ${pos}`);
    if (pos + n > data.length) truncated(`truncated pickle at byte ${pos}`);
  };
  const u8 = () => (need(1), data[pos++]);
  const u16 = () => (need(2), pos += 2, dv.getUint16(pos - 2, true));
  const u32 = () => (need(4), pos += 4, dv.getUint32(pos - 4, true));
  const i32 = () => (need(4), pos += 4, dv.getInt32(pos - 4, true));
  const u64 = () => {
    need(8);
    const v = dv.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(data.length)) truncated(`pickle length ${v} exceeds the data`);
    return Number(v);
  };
  const bytes = (n: number) => {
    need(n);
    // A string or bytes object is made from these: count them against the total.
    madeBytes += n;
    if (madeBytes > lim.maxBytes) {
      fail(`pickle makes more than ${lim.maxBytes} bytes of strings and bytes objects`);
    }
    pos += n;
    return data.subarray(pos - n, pos);
  };
  const bytesObject = (n: number) => rules.copyBytes ? bytes(n).slice() : bytes(n);
  const text = (n: number) => {
    const b = bytes(n);
    try {
      return utf8.decode(b);
    } catch {
      return fail(`invalid UTF-8 string in pickle at byte ${pos}`);
    }
  };
  const line = () => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) truncated("truncated GLOBAL in pickle");
    const s = latin1.decode(data.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const push = (v: V) => {
    if (held >= lim.maxStack) fail(`pickle stack exceeds ${lim.maxStack} values in all`);
    stack.push(v);
    held++;
  };
  const pop = (): V => {
    if (stack.length === 0) fail(`pickle stack underflow at byte ${pos - 1}`);
    held--;
    return stack.pop()!;
  };
  const addItems = (n: number) => {
    items += n;
    if (items > lim.maxItems) fail(`pickle holds more than ${lim.maxItems} items in containers`);
  };
  const top = (): V => {
    if (stack.length === 0) fail(`pickle stack underflow at byte ${pos - 1}`);
    return stack[stack.length - 1];
  };
  const popMark = (): V[] => {
    const frame = stack;
    const prev = metastack.pop();
    if (!prev) fail(`pickle pops a MARK that was never set (byte ${pos - 1})`);
    stack = prev!;
    held -= frame.length;
    return frame;
  };
  const nestIn = (container: object, child: V) => {
    if (typeof child !== "object" || child === null) return;
    const d = (depth.get(child) ?? 0) + 1;
    if (d > lim.maxNesting) fail(`pickle nests containers deeper than ${lim.maxNesting} levels`);
    if (d > (depth.get(container) ?? 0)) depth.set(container, d);
  };
  const tuple = (elems: V[]): V[] => {
    addItems(elems.length);
    for (const it of elems) nestIn(elems, it);
    return elems;
  };
  const memoPut = (i: number) => {
    if (!memo.has(i) && memo.size >= lim.maxMemo) {
      fail(`pickle memo exceeds ${lim.maxMemo} entries`);
    }
    memo.set(i, top());
  };
  const memoGet = (i: number) => {
    if (!memo.has(i)) fail(`pickle refers to memo entry ${i} that was never stored`);
    push(memo.get(i)!);
  };
  const setItems = (dict: V, kv: V[]) => {
    if (!(dict instanceof Map)) return fail("SETITEM(S) on something that is not a dict");
    if (kv.length % 2) fail("SETITEMS with an odd number of values");
    addItems(kv.length);
    for (let i = 0; i < kv.length; i += 2) {
      nestIn(dict, kv[i + 1]);
      dict.set(kv[i], kv[i + 1]);
    }
  };
  const appendItems = (list: V, elems: V[]) => {
    if (!Array.isArray(list)) return fail("APPEND(S) on something that is not a list");
    addItems(elems.length);
    for (const it of elems) {
      nestIn(list, it);
      list.push(it);
    }
  };
  const { newObject, build, persistentLoad } = rules;

  for (;;) {
    const at = pos;
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail("pickle protocol newer than 5");
        continue;
      case 0x95: // FRAME: a length hint only
        u64();
        continue;
      case 0x7d: // EMPTY_DICT
        push(new Map());
        continue;
      case 0x5d: // EMPTY_LIST
        push([]);
        continue;
      case 0x29: // EMPTY_TUPLE
        push([]);
        continue;
      case 0x28: // MARK
        if (metastack.length >= lim.maxMarkDepth) {
          fail(`pickle nests MARKs deeper than ${lim.maxMarkDepth}`);
        }
        metastack.push(stack);
        stack = [];
        continue;
      case 0x74: // TUPLE
        push(tuple(popMark()));
        continue;
      case 0x85: // TUPLE1
        push(tuple([pop()]));
        continue;
      case 0x86: { // TUPLE2
        const b = pop();
        push(tuple([pop(), b]));
        continue;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        push(tuple([pop(), b, c]));
        continue;
      }
      case 0x58: // BINUNICODE
        push(text(u32()));
        continue;
      case 0x8c: // SHORT_BINUNICODE
        push(text(u8()));
        continue;
      case 0x8d: // BINUNICODE8
        push(text(u64()));
        continue;
      case 0x54: { // BINSTRING
        const n = i32();
        if (n < 0) fail("negative BINSTRING length");
        push(latin1.decode(bytes(n)));
        continue;
      }
      case 0x55: // SHORT_BINSTRING
        push(latin1.decode(bytes(u8())));
        continue;
      case 0x42: // BINBYTES
        push(bytesObject(u32()));
        continue;
      case 0x43: // SHORT_BINBYTES
        push(bytesObject(u8()));
        continue;
      case 0x8e: // BINBYTES8
        push(bytesObject(u64()));
        continue;
      case 0x4a: // BININT
        push(i32());
        continue;
      case 0x4b: // BININT1
        push(u8());
        continue;
      case 0x4d: // BININT2
        push(u16());
        continue;
      case 0x8a: // LONG1
        push(decodeLong(bytes(u8())));
        continue;
      case 0x8b: { // LONG4
        const n = i32();
        if (n < 0 || n > 1024) fail(`LONG4 of ${n} bytes is out of range`);
        push(decodeLong(bytes(n)));
        continue;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        push(dv.getFloat64(pos, false));
        pos += 8;
        continue;
      case 0x4e: // NONE
        push(null);
        continue;
      case 0x88: // NEWTRUE
        push(true);
        continue;
      case 0x89: // NEWFALSE
        push(false);
        continue;
      case 0x71: // BINPUT
        memoPut(u8());
        continue;
      case 0x72: // LONG_BINPUT
        memoPut(u32());
        continue;
      case 0x94: // MEMOIZE
        memoPut(memo.size);
        continue;
      case 0x68: // BINGET
        memoGet(u8());
        continue;
      case 0x6a: // LONG_BINGET
        memoGet(u32());
        continue;
      case 0x73: { // SETITEM
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        continue;
      }
      case 0x75: { // SETITEMS
        const kv = popMark();
        setItems(top(), kv);
        continue;
      }
      case 0x61: { // APPEND
        const v = pop();
        appendItems(top(), [v]);
        continue;
      }
      case 0x65: { // APPENDS
        const elems = popMark();
        appendItems(top(), elems);
        continue;
      }
      case 0x63: { // GLOBAL
        const module = line();
        const name = line();
        push(rules.global(module, name, fail));
        continue;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== "string" || typeof name !== "string") {
          return fail("STACK_GLOBAL with non-string names");
        }
        push(rules.global(module, name, fail));
        continue;
      }
      case 0x52: { // REDUCE
        const args = pop();
        push(rules.reduce(pop(), args, fail));
        continue;
      }
      case 0x81: // NEWOBJ
        if (newObject) {
          const args = pop();
          push(newObject(pop(), args, fail));
          continue;
        }
        break;
      case 0x62: // BUILD
        if (build) {
          const state = pop();
          build(top(), state, fail);
          continue;
        }
        break;
      case 0x51: // BINPERSID
        if (persistentLoad) {
          push(persistentLoad(pop()));
          continue;
        }
        break;
      case 0x30: // POP
        pop();
        continue;
      case 0x31: // POP_MARK
        popMark();
        continue;
      case 0x32: // DUP
        push(top());
        continue;
      case 0x2e: { // STOP
        const result = pop();
        if (stack.length !== 0 || metastack.length !== 0) {
          // Python tolerates leftovers; the pickles we read never have them, so say so clearly.
          fail("pickle stops with values left on its stack");
        }
        return { value: result, end: pos };
      }
    }
    // Opcodes that fall through to here are not taken.
    fail(
      `unsupported pickle opcode 0x${op.toString(16).padStart(2, "0")} at byte ${at}: ` +
        rules.unsupported,
    );
  }
}

/** LONG1 / LONG4's little-endian two's complement; a number when it is a safe integer. */
function decodeLong(b: Uint8Array): number | bigint {
  if (b.length === 0) return 0;
  let v = 0n;
  for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
  if (b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
    ? Number(v)
    : v;
}
