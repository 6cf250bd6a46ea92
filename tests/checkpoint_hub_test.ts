import assert from "node:assert/strict";
import { join } from "node:path";
import { CheckpointError } from "../src/checkpoint/errors.ts";
import {
  type HubOptions,
  hubSettings,
  parseHubSpec,
  resolveHubSnapshot,
} from "../src/checkpoint/hub.ts";
import { openCheckpoint } from "../src/checkpoint/open.ts";
import { readSafetensors, writeSafetensors } from "../src/checkpoint/safetensors.ts";
import { FileByteSource } from "../src/checkpoint/byte_source.ts";
import { loadModel } from "../src/api.ts";
import { loadConfig } from "../src/config/config.ts";
import { type FakeTensor, mambaSsmConfig, writeTorchFile } from "./checkpoint_helpers.ts";
import { FakeHub, gitSha1, sha256 } from "./helpers/fake_hub.ts";
import { CONFIG, FIXTURES, runScript } from "./helpers/scripts.ts";

const enc = new TextEncoder();
const REPO = "JunxiongWang/MambaByte_Test";
const SPEC = `hf://${REPO}`;

/** A mamba_ssm config.json for the 48x2 RMSNorm fixture model. */
const CONFIG_JSON = enc.encode(JSON.stringify(mambaSsmConfig(48, 2)));

const fixtureSt = join(FIXTURES, "rms_hf", "model.safetensors");
const haveFixture = await Deno.stat(fixtureSt).then(() => true, () => false);
// The fake hub serves a model built from the committed fixture; without it the tests say so.
const noFixture = !haveFixture;
if (noFixture) console.warn(`checkpoint_hub_test: ${fixtureSt} missing; hub tests skipped`);

/** The fixture's tensors (transformers names) as plain data. */
async function fixtureTensors(): Promise<FakeTensor[]> {
  const src = await FileByteSource.open(fixtureSt);
  try {
    const { tensors } = await readSafetensors(src);
    const out: FakeTensor[] = [];
    for (const t of tensors.values()) {
      out.push({ name: t.name, dtype: t.dtype as "F32", shape: t.shape, data: await t.read() });
    }
    return out;
  } finally {
    src.close();
  }
}

/**
 * The fixture model as mamba_ssm's MambaLMHeadModel saves it: torch.save of its state dict
 * (backbone.embedding.*, lm_head.weight sharing the embedding's storage).
 */
async function mambaSsmBin(dir: string): Promise<Uint8Array> {
  const ts = (await fixtureTensors()).map((t) => ({
    ...t,
    name: t.name.replace("backbone.embeddings.", "backbone.embedding."),
  }));
  const emb = ts.find((t) => t.name === "backbone.embedding.weight")!;
  ts.push({ ...emb, name: "lm_head.weight", shareWith: emb.name });
  const path = join(dir, "pytorch_model.bin");
  await writeTorchFile(path, ts);
  return await Deno.readFile(path);
}

interface Setup {
  hub: FakeHub;
  tmp: string;
  cache: string;
  /** The same files as a local folder. */
  local: string;
  files: Record<string, Uint8Array>;
  commit: string;
  env: Record<string, string>;
  opts: (extra?: Record<string, string>) => HubOptions;
}

/** A fake hub serving REPO (config.json + pytorch_model.bin), an empty cache, a local copy. */
async function setup(): Promise<Setup> {
  const tmp = await Deno.makeTempDir({ prefix: "mb-hub-" });
  const local = join(tmp, "local");
  await Deno.mkdir(local);
  const files = {
    "config.json": CONFIG_JSON,
    "pytorch_model.bin": await mambaSsmBin(local),
  };
  await Deno.writeFile(join(local, "config.json"), CONFIG_JSON);
  const hub = new FakeHub();
  const commit = hub.addRepo(REPO, files);
  const cache = join(tmp, "cache");
  const env = { HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: cache };
  const opts = (extra: Record<string, string> = {}): HubOptions => ({
    env: (n) => ({ ...env, ...extra } as Record<string, string>)[n],
  });
  return { hub, tmp, cache, local, files, commit, env, opts };
}

async function teardown(s: Setup): Promise<void> {
  await s.hub.close();
  await Deno.remove(s.tmp, { recursive: true });
}

async function exists(p: string): Promise<boolean> {
  return await Deno.lstat(p).then(() => true, () => false);
}

/** The one-line CheckpointError `p` rejects with. */
async function errorOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof CheckpointError, `not a CheckpointError: ${(e as Error).stack}`);
    assert.ok(!e.message.includes("\n"), `not one line: ${e.message}`);
    return e.message;
  }
  assert.fail("no error");
}

/** Every tensor of both checkpoints: same names, dtypes, shapes and bytes. */
async function assertSameTensors(a: string, b: string, opts: HubOptions = {}): Promise<void> {
  const x = await openCheckpoint(a, opts);
  const y = await openCheckpoint(b, opts);
  try {
    assert.deepEqual([...x.tensors.keys()].sort(), [...y.tensors.keys()].sort());
    assert.ok(x.tensors.size >= 20);
    for (const [name, t] of x.tensors) {
      const u = y.tensors.get(name)!;
      assert.equal(t.dtype, u.dtype);
      assert.deepEqual(t.shape, u.shape);
      assert.deepEqual(await t.read(), await u.read(), name);
    }
    assert.deepEqual(x.hfDims, y.hfDims);
  } finally {
    x.close();
    y.close();
  }
}

Deno.test("hub: spec parsing and settings from the environment", () => {
  assert.deepEqual(parseHubSpec("hf://JunxiongWang/MambaByte_PG19_972M"), {
    owner: "JunxiongWang",
    name: "MambaByte_PG19_972M",
    revision: "main",
  });
  assert.equal(parseHubSpec("hf://a/b@refs/pr/1").revision, "refs/pr/1");
  assert.equal(parseHubSpec("hf://a/b.c-d@v1.0").revision, "v1.0");
  for (
    const bad of ["hf://a", "hf://a/b/c", "hf://a/b@", "hf://a/b@../x", "hf://../b", "hf://a--x/b"]
  ) {
    assert.throws(() => parseHubSpec(bad), CheckpointError, bad);
  }
  const env = (vars: Record<string, string>) => (n: string) => vars[n];
  assert.equal(hubSettings(env({ HOME: "/h" })).cacheDir, "/h/.cache/huggingface/hub");
  assert.equal(hubSettings(env({ HOME: "/h", HF_HOME: "/x" })).cacheDir, "/x/hub");
  assert.equal(
    hubSettings(env({ HOME: "/h", HF_HOME: "/x", HF_HUB_CACHE: "~/c" })).cacheDir,
    "/h/c",
  );
  assert.equal(hubSettings(env({ HOME: "/h" })).endpoint, "https://huggingface.co");
  assert.equal(hubSettings(env({ HF_ENDPOINT: "http://m.example/" })).endpoint, "http://m.example");
  assert.equal(hubSettings(env({ HF_HUB_OFFLINE: "1" })).offline, true);
  assert.equal(hubSettings(env({ HF_HUB_OFFLINE: "yes" })).offline, true);
  assert.equal(hubSettings(env({ HF_HUB_OFFLINE: "0" })).offline, false);
  assert.equal(hubSettings(env({})).offline, false);
  assert.throws(() => hubSettings(env({ HF_ENDPOINT: "ftp://x" })), CheckpointError);
});

Deno.test({
  name: "hub: download, then load equal to the local folder, in huggingface_hub's cache layout",
  ignore: noFixture,
  async fn() {
    const s = await setup();
    try {
      await Deno.writeFile(join(s.local, "pytorch_model.bin"), s.files["pytorch_model.bin"]);
      const progress: [number, number, string][] = [];
      const opts = {
        ...s.opts(),
        onDownload: (d: number, t: number, f: string) => progress.push([d, t, f]),
      };
      const dir = await resolveHubSnapshot(SPEC, opts);
      const repoDir = join(s.cache, "models--JunxiongWang--MambaByte_Test");
      assert.equal(dir, join(repoDir, "snapshots", s.commit));
      assert.equal(await Deno.readTextFile(join(repoDir, "refs", "main")), s.commit);
      const binSha = sha256(s.files["pytorch_model.bin"]);
      const cfgSha1 = gitSha1(CONFIG_JSON);
      assert.equal(await Deno.readLink(join(dir, "pytorch_model.bin")), `../../blobs/${binSha}`);
      assert.equal(await Deno.readLink(join(dir, "config.json")), `../../blobs/${cfgSha1}`);
      assert.deepEqual(
        await Deno.readFile(join(repoDir, "blobs", binSha)),
        s.files["pytorch_model.bin"],
      );
      assert.deepEqual(
        [...Deno.readDirSync(join(repoDir, "blobs"))].map((e) => e.name).sort(),
        [cfgSha1, binSha].sort(),
      );
      // Progress: ends at the whole file, never goes back.
      const bin = progress.filter((p) => p[2] === "pytorch_model.bin");
      const size = s.files["pytorch_model.bin"].length;
      assert.deepEqual(bin.at(-1), [size, size, "pytorch_model.bin"]);
      assert.ok(bin.every((p, i) => i === 0 || p[0] >= bin[i - 1][0]));
      assert.ok(progress.some((p) => p[2] === "config.json"));
      // The weights came through the CDN (no token to send there, none sent anyway).
      assert.ok(s.hub.requests.some((r) => r.server === "cdn" && r.path === `/blobs/${binSha}`));

      await assertSameTensors(SPEC, s.local, s.opts());
    } finally {
      await teardown(s);
    }
  },
});

Deno.test({
  name: "hub: a cached revision loads with the server stopped, and with HF_HUB_OFFLINE=1",
  ignore: noFixture,
  async fn() {
    const s = await setup();
    try {
      const first = await resolveHubSnapshot(SPEC, s.opts());
      await s.hub.close();
      const n = s.hub.requests.length;
      assert.equal(await resolveHubSnapshot(SPEC, s.opts()), first);
      assert.equal(await resolveHubSnapshot(SPEC, s.opts({ HF_HUB_OFFLINE: "1" })), first);
      assert.equal(await resolveHubSnapshot(`${SPEC}@${s.commit}`, s.opts()), first);
      assert.equal(s.hub.requests.length, n, "the cache must not touch the network");
      const ckpt = await openCheckpoint(SPEC, s.opts({ HF_HUB_OFFLINE: "1" }));
      assert.equal(ckpt.format, "hf-folder");
      assert.equal(ckpt.hfDims?.dModel, 48);
      ckpt.close();
      // Another revision is not cached: offline says so, naming the repo.
      const msg = await errorOf(resolveHubSnapshot(`${SPEC}@v2`, s.opts({ HF_HUB_OFFLINE: "1" })));
      assert.match(msg, /hf:\/\/JunxiongWang\/MambaByte_Test@v2: not in the Hugging Face cache/);
      assert.match(msg, /HF_HUB_OFFLINE/);
    } finally {
      await Deno.remove(s.tmp, { recursive: true });
    }
  },
});

Deno.test({
  name: "hub: HF_HUB_OFFLINE=1 with an empty cache is one clear line, no request made",
  ignore: noFixture,
  async fn() {
    const s = await setup();
    try {
      const msg = await errorOf(resolveHubSnapshot(SPEC, s.opts({ HF_HUB_OFFLINE: "1" })));
      assert.match(msg, /^hf:\/\/JunxiongWang\/MambaByte_Test: not in the Hugging Face cache \(/);
      assert.equal(s.hub.requests.length, 0);
    } finally {
      await teardown(s);
    }
  },
});

Deno.test({
  name: "hub: an interrupted transfer resumes with Range (a later run, and within a run)",
  ignore: noFixture,
  async fn() {
    const s = await setup();
    try {
      const bin = s.files["pytorch_model.bin"];
      const sha = sha256(bin);
      const repoDir = join(s.cache, "models--JunxiongWang--MambaByte_Test");
      const partial = join(repoDir, "blobs", `${sha}.incomplete`);
      const pointer = join(repoDir, "snapshots", s.commit, "pytorch_model.bin");
      s.hub.cut(sha, 60_000);
      const msg = await errorOf(resolveHubSnapshot(SPEC, { ...s.opts(), retries: 0 }));
      assert.match(
        msg,
        new RegExp(`download of pytorch_model.bin interrupted at 60000 of ${bin.length} bytes`),
      );
      assert.match(msg, /run again to resume/);
      assert.equal((await Deno.stat(partial)).size, 60_000);
      assert.ok(!(await exists(pointer)), "nothing half-written under snapshots/");
      assert.ok(!(await exists(join(repoDir, "blobs", sha))));

      // The next run asks for the rest only.
      s.hub.requests.length = 0;
      const dir = await resolveHubSnapshot(SPEC, { ...s.opts(), retries: 0 });
      const gets = s.hub.requests.filter((r) => r.server === "cdn");
      assert.deepEqual(gets.map((r) => r.range), ["bytes=60000-"]);
      assert.deepEqual(await Deno.readFile(join(dir, "pytorch_model.bin")), bin);
      assert.ok(!(await exists(partial)));

      // Within one run: two cuts, each resumed where it stopped.
      await Deno.remove(s.cache, { recursive: true });
      s.hub.requests.length = 0;
      s.hub.cut(sha, 50_000, 2);
      const again = await resolveHubSnapshot(SPEC, s.opts());
      const ranges = s.hub.requests.filter((r) => r.server === "cdn").map((r) => r.range);
      assert.deepEqual(ranges, [null, "bytes=50000-", "bytes=100000-"]);
      assert.deepEqual(await Deno.readFile(join(again, "pytorch_model.bin")), bin);
    } finally {
      await teardown(s);
    }
  },
});

Deno.test({
  name: "hub: a corrupted body fails its sha256 (or git sha1); nothing is kept",
  ignore: noFixture,
  async fn() {
    const s = await setup();
    try {
      const sha = sha256(s.files["pytorch_model.bin"]);
      const repoDir = join(s.cache, "models--JunxiongWang--MambaByte_Test");
      s.hub.corrupt.add(sha);
      const msg = await errorOf(resolveHubSnapshot(SPEC, s.opts()));
      assert.match(msg, new RegExp(`pytorch_model.bin does not match its sha256 ${sha}`));
      assert.ok(!(await exists(join(repoDir, "blobs", sha))));
      assert.ok(!(await exists(join(repoDir, "blobs", `${sha}.incomplete`))));
      assert.ok(!(await exists(join(repoDir, "snapshots", s.commit, "pytorch_model.bin"))));
      assert.ok(!(await exists(join(repoDir, "refs", "main"))));
      // A later run with a good body completes.
      s.hub.corrupt.delete(sha);
      await resolveHubSnapshot(SPEC, s.opts());

      // config.json is a git file: checked against git's blob sha1.
      const t = await setup();
      try {
        t.hub.corrupt.add(gitSha1(CONFIG_JSON));
        const m2 = await errorOf(resolveHubSnapshot(SPEC, t.opts()));
        assert.match(m2, /config.json does not match its git sha1/);
        const snap = join(t.cache, "models--JunxiongWang--MambaByte_Test", "snapshots");
        assert.ok(!(await exists(snap)));
      } finally {
        await teardown(t);
      }
    } finally {
      await teardown(s);
    }
  },
});

Deno.test({
  name: "hub: HF_TOKEN goes to the hub as a Bearer token, never to the CDN",
  ignore: noFixture,
  async fn() {
    const s = await setup();
    try {
      await resolveHubSnapshot(SPEC, s.opts({ HF_TOKEN: "hf_secret" }));
      const hub = s.hub.requests.filter((r) => r.server === "hub");
      const cdn = s.hub.requests.filter((r) => r.server === "cdn");
      assert.ok(hub.length >= 3 && cdn.length >= 1);
      assert.ok(hub.every((r) => r.authorization === "Bearer hf_secret"));
      assert.ok(cdn.every((r) => r.authorization === null));
      // Without HF_TOKEN nothing is sent.
      await Deno.remove(s.cache, { recursive: true });
      s.hub.requests.length = 0;
      await resolveHubSnapshot(SPEC, s.opts());
      assert.ok(s.hub.requests.every((r) => r.authorization === null));
    } finally {
      await teardown(s);
    }
  },
});

Deno.test({
  name: "hub: a missing repo, revision or weights, a bad endpoint, oversized files: one line each",
  ignore: noFixture,
  async fn() {
    const s = await setup();
    try {
      const missing = await errorOf(openCheckpoint("hf://nobody/nothing", s.opts()));
      assert.equal(
        missing,
        `hf://nobody/nothing: repository not found on ${s.hub.endpoint} (HTTP 404 for ` +
          `config.json; a private or gated repo needs HF_TOKEN)`,
      );
      assert.match(
        await errorOf(resolveHubSnapshot(`${SPEC}@nope`, s.opts())),
        /@nope: revision "nope" not found \(HTTP 404 for config.json\)/,
      );
      s.hub.addRepo("a/config-only", { "config.json": CONFIG_JSON });
      assert.match(
        await errorOf(resolveHubSnapshot("hf://a/config-only", s.opts())),
        /^hf:\/\/a\/config-only: the repo has no model.safetensors or pytorch_model.bin/,
      );
      assert.match(
        await errorOf(resolveHubSnapshot(SPEC, s.opts({ HF_ENDPOINT: "http://127.0.0.1:9" }))),
        /^hf:\/\/JunxiongWang\/MambaByte_Test: cannot reach 127.0.0.1:9 for config.json/,
      );
      s.hub.addRepo("a/huge-config", {
        "config.json": enc.encode(JSON.stringify({ pad: "x".repeat(1 << 20) })),
        "pytorch_model.bin": s.files["pytorch_model.bin"],
      });
      assert.match(
        await errorOf(resolveHubSnapshot("hf://a/huge-config", s.opts())),
        /config.json is \d+ bytes, more than the 1048576 allowed/,
      );
      s.hub.sizeOverride.set("pytorch_model.bin", 2 ** 50);
      assert.match(
        await errorOf(resolveHubSnapshot(SPEC, s.opts())),
        /pytorch_model.bin is 1125899906842624 bytes, more than the \d+ allowed/,
      );
      s.hub.sizeOverride.set("pytorch_model.bin", 1000);
      assert.match(
        await errorOf(resolveHubSnapshot(SPEC, s.opts())),
        /pytorch_model.bin: the server sends \d+ bytes where 1000 are expected/,
      );
      assert.match(
        await errorOf(openCheckpoint("hf://x", s.opts())),
        /expected hf:\/\/owner\/name/,
      );
      // A cache that cannot be written (here a file where the folder should be).
      const file = join(s.tmp, "not-a-folder");
      await Deno.writeTextFile(file, "");
      s.hub.sizeOverride.clear();
      assert.match(
        await errorOf(resolveHubSnapshot(SPEC, s.opts({ HF_HUB_CACHE: file }))),
        /^hf:\/\/JunxiongWang\/MambaByte_Test: cannot store it in .*not-a-folder/,
      );
    } finally {
      await teardown(s);
    }
  },
});

Deno.test({
  name: "hub: a hub that does not answer, or stops sending, times out (HF_HUB_*_TIMEOUT)",
  ignore: noFixture,
  async fn() {
    const s = await setup();
    try {
      const quick = s.opts({ HF_HUB_ETAG_TIMEOUT: "0.2", HF_HUB_DOWNLOAD_TIMEOUT: "0.2" });
      s.hub.stall = "head";
      assert.match(
        await errorOf(resolveHubSnapshot(SPEC, quick)),
        /^hf:\/\/JunxiongWang\/MambaByte_Test: no answer from 127.0.0.1:\d+ within 0.2 s for config.json$/,
      );
      s.hub.stall = "body";
      const msg = await errorOf(resolveHubSnapshot(SPEC, { ...quick, retries: 0 }));
      assert.match(
        msg,
        /download of pytorch_model.bin interrupted at 1000 of \d+ bytes \(no data for 0.2 s\)/,
      );
    } finally {
      await teardown(s);
    }
  },
});

Deno.test({
  name: "hub: sharded safetensors at a tag and at a commit; a renamed repo is followed",
  ignore: noFixture,
  async fn() {
    const s = await setup();
    try {
      const ts = await fixtureTensors();
      const half = ts.length >> 1;
      const shard = async (name: string, part: FakeTensor[]) => {
        await writeSafetensors(join(s.local, name), part);
        return await Deno.readFile(join(s.local, name));
      };
      const names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
      const weightMap = Object.fromEntries(ts.map((t, i) => [t.name, names[i < half ? 0 : 1]]));
      const index = enc.encode(JSON.stringify({ metadata: {}, weight_map: weightMap }));
      await Deno.writeFile(join(s.local, "model.safetensors.index.json"), index);
      const files = {
        "config.json": CONFIG_JSON,
        "model.safetensors.index.json": index,
        [names[0]]: await shard(names[0], ts.slice(0, half)),
        [names[1]]: await shard(names[1], ts.slice(half)),
      };
      const commit = s.hub.addRepo("a/sharded", files, ["v1"]);
      await assertSameTensors("hf://a/sharded@v1", s.local, s.opts());
      const repoDir = join(s.cache, "models--a--sharded");
      assert.equal(await Deno.readTextFile(join(repoDir, "refs", "v1")), commit);
      const snap = [...Deno.readDirSync(join(repoDir, "snapshots", commit))].map((e) => e.name);
      assert.deepEqual(snap.sort(), Object.keys(files).sort());

      // At a commit: no ref written, and no request when cached.
      const c2 = s.hub.addRepo("a/pinned", files);
      await resolveHubSnapshot(`hf://a/pinned@${c2}`, s.opts());
      assert.ok(!(await exists(join(s.cache, "models--a--pinned", "refs"))));

      // Renamed: the hub redirects (relatively) to the new name; the cache keeps the old name.
      s.hub.rename("old/name", REPO);
      const dir = await resolveHubSnapshot("hf://old/name", s.opts());
      assert.equal(dir, join(s.cache, "models--old--name", "snapshots", s.commit));
    } finally {
      await teardown(s);
    }
  },
});

Deno.test("hub: a config entry's hf:// checkpoint is kept as is", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "c.yml");
    await Deno.writeTextFile(
      path,
      "model:\n  default_model_id: m\n  common:\n    vocab_size: 256\n    d_state: 16\n" +
        "    d_conv: 4\n    expand: 2\n    dt_rank: auto\n  m:\n    d_model: 48\n    n_layer: 2\n" +
        `    checkpoint: ${SPEC}@v1\n  n:\n    d_model: 48\n    n_layer: 2\n    checkpoint: w.pt\n`,
    );
    const cfg = await loadConfig(path);
    assert.equal(cfg.model("m").checkpoint, `${SPEC}@v1`);
    assert.equal(cfg.model("n").checkpoint, join(dir, "w.pt"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "hub: loadModel({checkpoint: 'hf://...', onDownload}) reads HF_* from the environment",
  ignore: noFixture,
  async fn() {
    const s = await setup();
    // loadModel has no env option: set the process's variables for this test, then restore them.
    const saved = Object.keys(s.env).map((k) => [k, Deno.env.get(k)] as const);
    try {
      for (const [k, v] of Object.entries(s.env)) Deno.env.set(k, v);
      const files = new Set<string>();
      const model = await loadModel({
        configPath: CONFIG,
        modelId: "test-48x2",
        checkpoint: SPEC,
        device: "cpu",
        onDownload: (_d, _t, f) => files.add(f),
      });
      try {
        assert.equal(model.source, SPEC);
        assert.deepEqual([...files].sort(), ["config.json", "pytorch_model.bin"]);
        const { logProbs } = await model.logProbs(enc.encode("ROMEO:"));
        assert.equal(logProbs.length, 5);
      } finally {
        model.close();
      }
    } finally {
      for (const [k, v] of saved) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
      await teardown(s);
    }
  },
});

Deno.test({
  name: "hub: generate.ts --pretrained_model_filepath hf://... equals the local folder",
  ignore: noFixture,
  async fn() {
    const s = await setup();
    try {
      await Deno.writeFile(join(s.local, "pytorch_model.bin"), s.files["pytorch_model.bin"]);
      const args = (ckpt: string) => [
        "--config_path",
        CONFIG,
        "--model_id",
        "test-48x2",
        "--pretrained_model_filepath",
        ckpt,
        "--prompt",
        "ROMEO:",
        "--max_new_tokens",
        "16",
        "--top_k",
        "1",
        "--device",
        "cpu",
      ];
      const viaHub = await runScript("generate.ts", args(SPEC), { env: s.env });
      assert.equal(viaHub.code, 0, viaHub.stderr);
      const viaDir = await runScript("generate.ts", args(s.local));
      assert.equal(viaDir.code, 0, viaDir.stderr);
      assert.equal(viaHub.stdout, viaDir.stdout);
      assert.ok(!viaHub.stderr.includes("downloading"), "no progress bar off a terminal");
      assert.ok(s.hub.requests.some((r) => r.server === "cdn"));
      // A missing repo: one line on stderr, exit 1.
      const bad = await runScript("generate.ts", args("hf://nobody/nothing"), { env: s.env });
      assert.equal(bad.code, 1);
      assert.match(bad.stderr.trim(), /^[^\n]*hf:\/\/nobody\/nothing: repository not found[^\n]*$/);
    } finally {
      await teardown(s);
    }
  },
});
