/**
 * Downloads overlapped with compute (mb_download_async, its direct form, mb_download_wait, TapPipeline, and
 * forwardChunks' overlapTaps) on the CPU backend: the same bytes as synchronous downloads, the
 * source's value at the call (not after later writes), tickets in order, the pipeline's delivery
 * order; downloads straight into registered result arrays (mb_host_register, HostRegistry,
 * pinInto). The CUDA side is held to the CPU by csrc/tests/cuda_vs_cpu.c (t_download) and, through
 * Deno, by tests/cuda_model_test.ts.
 */
import assert from "node:assert/strict";
import { loadModel, type MambaByteLM } from "../mod.ts";
import { Backend } from "../src/backend/backend.ts";
import { TapPipeline } from "../src/model/tap_pipeline.ts";
import { HostRegistry, MIN_REGISTERED_BYTES } from "../src/model/host_registry.ts";
import { extractModuleOutputs } from "../src/analysis/extract.ts";

const CONFIG = new URL("../configs/mambabyte_lm.yml", import.meta.url).pathname;
const TEXT = new TextEncoder().encode(
  "Taps come back while the next layer runs. ÆØÅ 123\n".repeat(4),
);

function load(chunkSize?: number): Promise<MambaByteLM> {
  return loadModel({
    configPath: CONFIG,
    modelId: "test-64x3",
    device: "cpu",
    seed: 11,
    chunkSize,
  });
}

/**
 * forwardChunks with layer 1's dt_proj tapped into `whole` through the overlapped downloads: every
 * chunk arrives as a view of `whole`, and `whole` ends equal to the forward's tap.
 */
async function assertTapsLandIn(lm: MambaByteLM, text: Uint8Array, whole: Float32Array) {
  const st = await lm.forwardChunks(text, {
    taps: ["dt_proj"],
    layers: [1],
    overlapTaps: true,
    skipHead: true,
    tapTarget: (m) => whole.subarray(m.start * m.cols, (m.start + m.rows) * m.cols),
    onTap: (c) => assert.equal(c.data.buffer, whole.buffer),
  });
  st.free();
  const ref = await lm.forward(text, { taps: ["dt_proj"], layers: [1] });
  assert.deepEqual(whole, ref.taps.get("dt_proj")!.get(1)!);
}

function hostView(p: Deno.PointerValue, floats: number): Float32Array {
  return new Float32Array(Deno.UnsafePointerView.getArrayBuffer(p!, floats * 4));
}

Deno.test("downloadAsync copies the source as it was at the call; tickets count up", () => {
  const be = Backend.create("cpu", { threads: 2 });
  try {
    const n = 1000;
    const src = be.alloc(n * 4);
    const hosts = [be.hostAlloc(n * 4), be.hostAlloc(n * 4), be.hostAlloc(n * 4)];
    const tickets: bigint[] = [];
    for (let k = 0; k < 3; k++) {
      be.upload(src, Float32Array.from({ length: n }, (_, i) => i * (k + 1) + 0.5));
      tickets.push(be.downloadAsync(hosts[k], src, n * 4));
      be.memset(src, 0xff, n * 4); // overwritten right after the call
    }
    assert.deepEqual(tickets.map((t) => t - tickets[0]), [0n, 1n, 2n]);
    be.downloadWait(tickets[2]);
    be.downloadWait(tickets[0]); // an earlier ticket after a later one: done already
    for (let k = 0; k < 3; k++) {
      const v = hostView(hosts[k], n);
      for (const i of [0, 1, 499, 999]) assert.equal(v[i], i * (k + 1) + 0.5);
    }
    // zero bytes still gets a ticket; an unissued ticket is an error
    const z = be.downloadAsync(null, src, 0);
    assert.equal(z, tickets[2] + 1n);
    assert.throws(() => be.downloadWait(z + 1n), /download_wait/);
    assert.throws(() => be.downloadWait(0n), /download_wait/);
    for (const h of hosts) be.hostFree(h);
    be.hostFree(null);
    be.free(src);
  } finally {
    be.close();
  }
});

Deno.test("downloadAsyncDirect copies the source as the ops before it leave it, in the tickets' count", () => {
  const be = Backend.create("cpu", { threads: 2 });
  try {
    const n = 777;
    const src = be.alloc(n * 4);
    const host = be.hostAlloc(n * 4);
    be.upload(src, Float32Array.from({ length: n }, (_, i) => i - 0.25));
    const t0 = be.downloadAsync(host, src, n * 4);
    const t1 = be.downloadAsyncDirect(host, src, n * 4);
    assert.equal(t1, t0 + 1n);
    be.downloadWait(t1);
    const v = hostView(host, n);
    for (const i of [0, 1, 400, n - 1]) assert.equal(v[i], i - 0.25);
    assert.equal(be.downloadAsyncDirect(null, src, 0), t1 + 1n);
    assert.throws(() => be.downloadAsyncDirect(null, src, 4), /download_async_direct/);
    be.hostFree(host);
    be.free(src);
  } finally {
    be.close();
  }
});

Deno.test("TapPipeline delivers in push order, the same data, with a bounded pool", () => {
  const be = Backend.create("cpu", { threads: 2 });
  try {
    const pipe = new TapPipeline(be, 2);
    const src = be.alloc(4096 * 4);
    const got: number[] = [];
    const dsts: Float32Array[] = [];
    for (let k = 0; k < 7; k++) {
      const len = [10, 4096, 0, 333, 4000, 1, 2048][k];
      be.upload(src, Float32Array.from({ length: 4096 }, (_, i) => k * 10000 + i));
      const dst = new Float32Array(len);
      dsts.push(dst);
      pipe.push(src, dst, (d) => {
        assert.equal(d, dst);
        got.push(k);
      });
      be.memset(src, 0, 4096 * 4);
      assert.ok(pipe.pending <= 2);
    }
    pipe.drain();
    assert.equal(pipe.pending, 0);
    assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6]);
    dsts.forEach((d, k) => d.forEach((v, i) => assert.equal(v, k * 10000 + i)));
    assert.throws(() => new TapPipeline(be, 0), RangeError);
    pipe.free();
    be.free(src);
  } finally {
    be.close();
  }
});

Deno.test("forwardChunks: overlapped tap downloads equal synchronous ones, bit for bit", async () => {
  const model = await load(48);
  try {
    const lm = model;
    const taps = ["norm", "in_proj", "conv1d", "x_proj", "dt_proj", "out_proj", "mixer"] as const;
    const run = async (overlapTaps: boolean, text: Uint8Array) => {
      const out: string[] = [];
      const data = new Map<string, Float32Array>();
      const st = await lm.forwardChunks(text, {
        taps,
        layers: [0, 2],
        overlapTaps,
        skipHead: true,
        onTap: (c) => {
          out.push(`${c.layer}/${c.tap}/${c.start}/${c.rows}`);
          data.set(`${c.layer}/${c.tap}/${c.start}`, c.data);
        },
      });
      st.free();
      return { out, data };
    };
    // 48-position chunks and a last one-position chunk (the decoding-step path)
    for (const text of [TEXT, TEXT.subarray(0, 97)]) {
      const a = await run(false, text);
      const b = await run(true, text);
      assert.deepEqual(b.out, a.out);
      for (const [k, v] of a.data) assert.deepEqual(b.data.get(k), v, k);
    }
    // tapTarget: the chunk lands in the caller's array, the same values
    await assertTapsLandIn(lm, TEXT, new Float32Array(TEXT.length * lm.dims.dInner));
  } finally {
    model.close();
  }
});

Deno.test("a callback that throws leaves no download in flight; the model stays usable", async () => {
  const model = await load(32);
  try {
    await assert.rejects(
      model.forwardChunks(TEXT, {
        taps: ["in_proj"],
        overlapTaps: true,
        skipHead: true,
        onTap: () => {
          throw new Error("stop");
        },
      }),
      /stop/,
    );
    const a = await model.forward(TEXT, { taps: ["x_proj"], layers: [0] });
    const m = await extractModuleOutputs(model, TEXT, { modules: ["x_proj"], layers: [0] });
    assert.deepEqual(m.modules.get("x_proj")!.get(0)!.data, a.taps.get("x_proj")!.get(0)!);
  } finally {
    model.close();
  }
});

Deno.test("hostCopy and large downloads fill fresh arrays exactly (threaded, odd sizes and offsets)", () => {
  // with transparent huge pages asked for fresh destinations (the default) and without
  for (const [threads, huge] of [[1, "1"], [3, "1"], [3, "0"]] as const) {
    Deno.env.set("MAMBABYTE_HOST_HUGEPAGES", huge);
    const be = Backend.create("cpu", { threads });
    try {
      // around the 4 MiB slices of the threaded copy, an unaligned start and odd lengths; 12 MiB + 2
      // splits into three slices whose length rounded down would leave the last 2 bytes out
      for (
        const bytes of [1, 4095, (8 << 20) - 3, (8 << 20) + 12345, (12 << 20) + 2, (21 << 20) + 7]
      ) {
        const src = be.hostAlloc(bytes + 64);
        try {
          const s = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(src!, bytes + 64));
          for (let i = 0; i < s.length; i++) s[i] = (i * 131 + bytes) & 255;
          const dst = new Uint8Array(bytes + 5);
          const at = Deno.UnsafePointer.offset(src!, 3);
          be.hostCopy(dst.subarray(1, 1 + bytes), at);
          assert.equal(dst[0], 0);
          assert.equal(dst[1 + bytes], 0);
          const bad = dst.subarray(1, 1 + bytes).findIndex((v, i) => v !== s[3 + i]);
          assert.equal(bad, -1, `${bytes} bytes, ${threads} threads, huge ${huge}: byte ${bad}`);
          // a CPU download of the same size goes through the same copy
          const dev = be.alloc(bytes);
          be.upload(dev, s.subarray(3, 3 + bytes));
          const back = new Uint8Array(bytes);
          be.download(back, dev);
          be.free(dev);
          assert.deepEqual(back, s.subarray(3, 3 + bytes));
        } finally {
          be.hostFree(src);
        }
      }
    } finally {
      be.close();
      Deno.env.delete("MAMBABYTE_HOST_HUGEPAGES");
    }
  }
});

/**
 * The fraction of `view`'s 4 KiB pages that are resident, from /proc/self/pagemap (bit 63 of a
 * page's entry: present; readable without privileges), or null where there is no pagemap.
 */
function residentFraction(view: ArrayBufferView): number | null {
  let f: Deno.FsFile;
  try {
    f = Deno.openSync("/proc/self/pagemap");
  } catch {
    return null;
  }
  try {
    const addr = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(view)));
    const first = addr / 4096n, last = (addr + BigInt(view.byteLength) - 1n) / 4096n;
    const n = Number(last - first + 1n);
    const buf = new Uint8Array(n * 8);
    f.seekSync(Number(first * 8n), Deno.SeekMode.Start);
    for (let got = 0; got < buf.length;) {
      const r = f.readSync(buf.subarray(got));
      if (r === null) break;
      got += r;
    }
    const entries = new BigUint64Array(buf.buffer);
    let present = 0;
    for (const e of entries) if (e >> 63n) present++;
    return present / n;
  } finally {
    f.close();
  }
}

const noPagemap = residentFraction(new Uint8Array(8)) === null;
if (noPagemap) {
  console.warn("tap_download_test: no /proc/self/pagemap; the prefault test is skipped");
}

Deno.test({
  name: "hostPrefault maps fresh arrays in the background and leaves their contents alone",
  ignore: noPagemap,
}, () => {
  const be = Backend.create("cpu", { threads: 2 });
  const MiB = 1 << 20;
  // A new array whose pages are not mapped yet: the allocator may hand back memory a collected
  // array had mapped (and zero it), so such arrays are kept aside until a fresh one comes.
  const keptAside: Float32Array[] = [];
  const unmapped = (length: number): Float32Array => {
    for (let tries = 0; tries < 8; tries++) {
      const a = new Float32Array(length);
      if (residentFraction(a)! < 0.1) return a;
      keptAside.push(a);
    }
    throw new Error("the allocator gave no unmapped memory in 8 tries");
  };
  try {
    for (const on of ["2", "0"]) {
      Deno.env.set("MAMBABYTE_HOST_PREFAULT", on);
      // odd sizes and a view that starts inside its buffer; one below the 256 KiB floor
      const big = unmapped((48 * MiB + 12) / 4);
      const inner = unmapped((40 * MiB) / 4).subarray(1001, 1001 + (24 * MiB) / 4 + 3);
      const small = new Float32Array(1000);
      big[0] = 1.5, big[big.length - 1] = -2.5, inner[7] = 3.25;
      be.hostPrefault([big, inner, small]);
      big[12345] = 42; // written while the threads run
      // a copy into a range being mapped waits for that range, then copies
      const src = be.hostAlloc(12 * MiB);
      try {
        const s = new Float32Array(Deno.UnsafePointerView.getArrayBuffer(src!, 12 * MiB));
        for (let i = 0; i < s.length; i++) s[i] = i % 1000;
        be.hostCopy(inner.subarray(8 << 10, (8 << 10) + s.length), src);
        const bad = inner.subarray(8 << 10, (8 << 10) + s.length).findIndex((v, i) => v !== s[i]);
        assert.equal(bad, -1);
        inner.subarray(8 << 10, (8 << 10) + s.length).fill(0);
      } finally {
        be.hostFree(src);
      }
      be.hostPrefaultWait();
      // (inner's first half was written by the copy either way)
      const tail = inner.subarray((13 * MiB) / 4);
      for (const [name, v] of [["big", big], ["inner", inner], ["inner's tail", tail]] as const) {
        if (on === "0" && name === "inner") continue;
        const r = residentFraction(v)!;
        if (on === "2") assert.ok(r > 0.99, `prefault mapped ${r} of ${name}`);
        else assert.ok(r < 0.1, `MAMBABYTE_HOST_PREFAULT=0 mapped ${r} of ${name}`);
      }
      assert.deepEqual([big[0], big[12345], big[big.length - 1], inner[7]], [1.5, 42, -2.5, 3.25]);
      const odd = big.findIndex((v, i) =>
        v !== 0 && i !== 0 && i !== 12345 && i !== big.length - 1
      );
      assert.equal(odd, -1);
      assert.equal(small.every((v) => v === 0), true);
    }
    be.hostPrefaultWait(); // nothing in flight: returns at once
    be.hostPrefault([new Float32Array(MiB)]); // left running: close waits for it
  } finally {
    Deno.env.delete("MAMBABYTE_HOST_PREFAULT");
    be.close();
  }
});

Deno.test("module outputs into prefaulted fresh arrays equal the plain path's", async () => {
  const model = await load(512);
  try {
    const text = new TextEncoder().encode("Fresh arrays are mapped ahead. ".repeat(80)); // 2480
    const opts = { modules: ["dt_proj", "x_proj"] as const, layers: [0, 2] };
    const plain = await extractModuleOutputs(model, text, { ...opts, prefault: false });
    const ahead = await extractModuleOutputs(model, text, { ...opts, prefault: true });
    assert.ok(text.length * model.dims.dInner * 4 >= 256 << 10, "arrays large enough to be mapped");
    for (const m of opts.modules) {
      for (const l of opts.layers) {
        assert.deepEqual(ahead.modules.get(m)!.get(l)!.data, plain.modules.get(m)!.get(l)!.data);
      }
    }
  } finally {
    model.close();
  }
});

Deno.test("hostCopy refuses overlapping memory with one clear error", () => {
  const be = Backend.create("cpu");
  try {
    const p = be.hostAlloc(1024);
    try {
      const view = new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(p!, 1024));
      assert.throws(
        () => be.hostCopy(view.subarray(0, 512), Deno.UnsafePointer.offset(p!, 100)),
        /mb_host_copy: dst and src overlap/,
      );
    } finally {
      be.hostFree(p);
    }
  } finally {
    be.close();
  }
});

Deno.test("HostRegistry keeps one set of registered arrays (1 MiB and up)", () => {
  const be = Backend.create("cpu", { threads: 1 });
  const reg = new HostRegistry(be);
  try {
    const a = new Float32Array(MIN_REGISTERED_BYTES / 4),
      b = new Float32Array(MIN_REGISTERED_BYTES);
    const small = new Float32Array(1000);
    reg.keepOnly([a.buffer, small.buffer]);
    assert.ok(reg.covers(a.subarray(10, 20)));
    assert.ok(!reg.covers(small), "under 1 MiB: not registered");
    assert.equal(reg.bytes, a.byteLength);
    reg.keepOnly([b.buffer, b.buffer]);
    assert.ok(!reg.covers(a) && reg.covers(b));
    assert.equal(reg.bytes, b.byteLength);
    // the backend's calls: zero bytes is nothing, a range registers and unregisters
    be.hostRegister(new Float32Array(0));
    be.hostRegister(small);
    be.hostUnregister(small);
  } finally {
    reg.clear();
    assert.equal(reg.bytes, 0);
    be.close();
  }
});

Deno.test("TapPipeline downloads straight into a registered array: the same bytes, no host buffer", () => {
  const be = Backend.create("cpu", { threads: 2 });
  const reg = new HostRegistry(be);
  const pipe = new TapPipeline(be, 2, reg);
  try {
    const n = MIN_REGISTERED_BYTES / 4 + 77;
    const src = be.alloc(n * 4);
    const want = Float32Array.from({ length: n }, (_, i) => i * 0.25 - 3);
    be.upload(src, want);
    const dst = new Float32Array(n + 100);
    reg.keepOnly([dst.buffer]);
    let hostAllocs = 0;
    const hostAlloc = be.hostAlloc.bind(be);
    Object.assign(be, { hostAlloc: (bytes: number) => (hostAllocs++, hostAlloc(bytes)) });
    const got: Float32Array[] = [];
    pipe.push(src, dst.subarray(50, 50 + n), (d) => got.push(d));
    be.memset(src, 0, n * 4); // after the call: the download keeps the value at the call
    pipe.drain();
    assert.equal(got.length, 1);
    assert.equal(got[0].buffer, dst.buffer);
    assert.deepEqual(got[0], want);
    assert.equal(dst[49], 0);
    assert.equal(dst[50 + n], 0);
    assert.equal(hostAllocs, 0, "no staging buffer on the host");
    // an unregistered destination takes the staged path (a host buffer)
    const other = new Float32Array(n);
    pipe.push(src, other, () => {});
    pipe.drain();
    assert.equal(hostAllocs, 1);
    be.free(src);
  } finally {
    pipe.free();
    reg.clear();
    be.close();
  }
});

Deno.test("reused result arrays registered (pinInto, the CUDA default) get the staged path's values", async () => {
  const model = await load(512);
  try {
    const text = new TextEncoder().encode("Pinned arrays take the downloads. ".repeat(70)); // 2380
    const first = await extractModuleOutputs(model, text, { modules: ["dt_proj"], layers: [0, 2] });
    assert.equal(model.registeredHostBytes, 0, "fresh arrays are not registered");
    // the CPU's default registers nothing (it would only keep the arrays alive)
    await extractModuleOutputs(model, text, {
      modules: ["dt_proj"],
      layers: [0, 2],
      into: first.modules,
    });
    assert.equal(model.registeredHostBytes, 0, "no registration by default on the CPU");
    const again = await extractModuleOutputs(model, text, {
      modules: ["dt_proj"],
      layers: [0, 2],
      into: first.modules,
      pinInto: true, // what CUDA does by default
    });
    const bytes = 2 * text.length * model.dims.dInner * 4;
    assert.equal(model.registeredHostBytes, bytes, "the reused arrays are registered");
    // an extraction into fresh arrays in between leaves them registered (the CUDA default)
    await extractModuleOutputs(model, text, { modules: ["dt_proj"], layers: [1] });
    assert.equal(model.registeredHostBytes, bytes, "still registered after a fresh extraction");
    for (const l of [0, 2]) {
      const t = again.modules.get("dt_proj")!.get(l)!;
      assert.equal(t.data, first.modules.get("dt_proj")!.get(l)!.data, "reused in place");
    }
    // pinInto: false takes the staged path into the same arrays, with the same values
    const kept = again.modules.get("dt_proj")!.get(2)!.data.slice();
    (again.modules.get("dt_proj")!.get(2)!.data as Float32Array).fill(0);
    await extractModuleOutputs(model, text, {
      modules: ["dt_proj"],
      layers: [0, 2],
      into: again.modules,
      pinInto: false,
    });
    assert.deepEqual(again.modules.get("dt_proj")!.get(2)!.data, kept);
    // through the overlapped path, which the registration changes: straight into the array
    const whole = new Float32Array(text.length * model.dims.dInner);
    assert.ok(whole.byteLength >= MIN_REGISTERED_BYTES);
    model.pinHostArrays([whole]);
    await assertTapsLandIn(model, text, whole);
    const ref0 = await model.forward(text, { taps: ["dt_proj"], layers: [0] });
    assert.deepEqual(again.modules.get("dt_proj")!.get(0)!.data, ref0.taps.get("dt_proj")!.get(0)!);
  } finally {
    model.close();
  }
});
