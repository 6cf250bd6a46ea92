/**
 * Runs a threaded product (pool + OpenBLAS workers start) and returns from main at once, so the
 * library is closed at exit with its worker threads alive: see native_lookup_test.ts.
 */
import { Backend } from "../../src/backend/backend.ts";

const be = Backend.create("cpu");
const [n, k, m] = [64, 256, 512];
const x = be.alloc(n * k * 4), w = be.alloc(m * k * 4), y = be.alloc(n * m * 4);
be.memset(x, 0, n * k * 4);
be.memset(w, 0, m * k * 4);
be.linear({ x, w, wdtype: "f32", bias: null, n, inF: k, outF: m, y });
be.linear({ x, w, wdtype: "f32", bias: null, n: 1, inF: k, outF: m, y });
console.log("ok");
