/**
 * `mipserver export`: writes one tar.gz holding what the named packages need (default: everything servable from the
 * cache), walked offline through the app so the bundle holds exactly what a device would be served. Entries are
 * sorted and have fixed timestamps, owners and modes, so two exports of the same cache are byte-identical. Files are
 * streamed from the store into the archive (hashed in a first pass), never held whole in memory; the archive is
 * written to a temporary file beside the output and renamed into place when complete.
 * @module
 */
import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { basename, dirname, join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { createTarPacker } from "modern-tar";
import type { App } from "../app.ts";
import type { Config } from "../config/schema.ts";
import { readCatalog } from "../packages/layer.ts";
import type { ObjectStore } from "../store/object_store.ts";
import { signDocument, type SigningKey } from "../packages/signing.ts";
import { MemoryPacer } from "./memory.ts";
import {
  BUNDLE_FORMAT,
  BUNDLE_VERSION,
  type BundleManifest,
  type BundleObject,
  ENTRY_TIME,
  MANIFEST_ENTRY,
} from "./format.ts";
import { parseSpec, type Spec, specText, type Variant, Walker, WalkError } from "./walk.ts";
import { fileKey, INDEX_MANIFEST_KEY, INDEX_PROFILE_KEY, NAMED_KEY } from "../store/keys.ts";

/** What an export wrote. */
export interface ExportResult {
  output: string;
  objects: number;
  bytes: number;
  /** Packages asked for by name that are not (entirely) in the cache, with the reason. */
  missing: Map<string, string>;
  /** Whether the bundle was written (not when a package asked for by name is missing). */
  written: boolean;
  /** The key id it was signed with, when signed. */
  signedBy?: string;
}

/** Where an object's bytes come from: memory (manifests, the index) or an object in the store. */
type Source = { bytes: Uint8Array } | { key: string };

const enc = new TextEncoder();
/** Code-unit order, the same on every machine and locale. */
const byText = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
const dec = new TextDecoder();

/** The store's stream of `key`; an object gone meanwhile (evicted, purged) fails the export naming it. */
async function objectStream(store: ObjectStore, key: string): Promise<ReadableStream<Uint8Array>> {
  const stream = await store.read(key);
  if (!stream) throw new Error(`${key} left the cache during the export; run it again`);
  return stream;
}

/** The lowercase hex sha256 and size of a stored object, streamed. */
async function hashObject(
  store: ObjectStore,
  key: string,
  pacer: MemoryPacer,
): Promise<{ sha256: string; size: number }> {
  const hash = createHash("sha256");
  let size = 0;
  for await (const chunk of await objectStream(store, key)) {
    hash.update(chunk);
    size += chunk.byteLength;
    pacer.add(chunk.byteLength);
  }
  return { sha256: hash.digest("hex"), size };
}

/** A stored object's pieces, counted by `pacer`. */
async function packStream(store: ObjectStore, key: string, pacer: MemoryPacer): Promise<ReadableStream<Uint8Array>> {
  return (await objectStream(store, key)).pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        pacer.add(chunk.byteLength);
        controller.enqueue(chunk);
      },
    }),
  );
}

/** Every (name, version) the cache holds manifests for, and the variants and profiles seen, for a full export. */
async function cachedSpecs(
  app: App,
  config: Config,
): Promise<{ specs: Spec[]; mpys: Set<string>; profiles: Set<string> }> {
  const specs = new Map<string, Spec>();
  const mpys = new Set<string>();
  const profiles = new Set<string>();
  const add = (name: string, version: string) => specs.set(`${name}@${version}`, { name, version });
  for await (const key of app.store.keys("index")) {
    const m = INDEX_MANIFEST_KEY.exec(key);
    if (m) {
      mpys.add(m[2]);
      add(m[3], m[4]);
    }
    // An index package built for a profile: the profile is exported too.
    const p = INDEX_PROFILE_KEY.exec(key);
    if (p) {
      profiles.add(p[1]);
      mpys.add(p[2]);
      add(p[3], p[4]);
    }
  }
  for await (const key of app.store.keys("named")) {
    const m = NAMED_KEY.exec(key);
    if (!m || !(m[1] in config.packages)) continue;
    mpys.add(m[2]);
    if (m[3] !== "_") profiles.add(m[3]);
    add(m[1], "latest");
    add(m[1], m[4]);
  }
  const catalog = await readCatalog(app.store);
  for (const path of catalog.served) {
    const m = /^(?:t\/([^/]+)\/)?package\/([^/]+)\/([^/]+)\/(.+)\.json$/.exec(path);
    if (!m) continue;
    if (m[1]) profiles.add(m[1]);
    mpys.add(m[2]);
    add(m[3], m[4]);
  }
  return { specs: [...specs.values()].sort((a, b) => byText(specText(a), specText(b))), mpys, profiles };
}

/**
 * Exports `packages` (`name` or `name@version`; empty: everything servable) from the cache of `app` (built offline,
 * with the base placeholder as its public URL) into `output`.
 */
export async function exportBundle(
  app: App,
  config: Config,
  packages: string[],
  output: string,
  options: { sign?: SigningKey; now?: Date } = {},
): Promise<ExportResult> {
  const all = packages.length === 0;
  const found = all ? await cachedSpecs(app, config) : undefined;
  const specs = found?.specs ?? packages.map(parseSpec);
  const mpys = new Set(found?.mpys ?? []);
  mpys.add("py");
  if (app.compiler.version) mpys.add(String(app.compiler.version.major));
  const profiles = new Set([...Object.keys(config.targets), ...(found?.profiles ?? [])]);
  const catalog = await readCatalog(app.store);
  for (const p of catalog.profiles) profiles.add(p);
  const variants: Variant[] = [];
  for (const mpy of [...mpys].sort()) {
    variants.push({ mpy, profile: null });
    if (mpy !== "py") { for (const profile of [...profiles].sort()) variants.push({ mpy, profile }); }
  }

  const walker = new Walker({
    handler: app.handler,
    haveFile: (hash) => app.store.has(fileKey(hash)),
    isNamed: (name) => name in config.packages,
  });
  const missing = new Map<string, string>();
  for (const spec of specs) {
    let any = false;
    let why = "";
    for (const variant of variants) {
      try {
        await walker.package(spec, variant);
        any = true;
      } catch (e) {
        // A variant that was never warmed is simply not exported; a package with none at all is reported.
        if (!why || !(e instanceof WalkError && e.status === 503)) why = (e as Error).message;
      }
    }
    if (!any) missing.set(specText(spec), why);
  }
  if (!all && missing.size > 0) return { output, objects: 0, bytes: 0, missing, written: false };

  const sources = new Map<string, Source>();
  for (const [path, bytes] of walker.found.served) sources.set(`served/${path}`, { bytes });
  for (const key of walker.found.files) sources.set(key, { key });
  for (const key of walker.found.mirrors) {
    // Mirrored files may be refreshed by a running server: read once, so the hash and the bytes agree.
    const object = await app.store.get(key, { direct: true });
    if (!object) throw new Error(`${key} left the cache during the export; run it again`);
    sources.set(key, { bytes: object.body });
  }
  sources.set("index.json", { bytes: await indexFor(app, walker.found.names, walker.found.served) });

  const objects: BundleObject[] = [];
  const hashing = new MemoryPacer();
  for (const path of [...sources.keys()].sort()) {
    const source = sources.get(path)!;
    if ("bytes" in source) {
      objects.push({
        path,
        size: source.bytes.byteLength,
        sha256: createHash("sha256").update(source.bytes).digest("hex"),
      });
    } else {
      objects.push({ path, ...(await hashObject(app.store, source.key, hashing)) });
    }
  }
  const manifest: BundleManifest = {
    format: BUNDLE_FORMAT,
    version: BUNDLE_VERSION,
    packages: all ? ["*"] : specs.map(specText),
    profiles: [...profiles].filter((p) => [...walker.found.served.keys()].some((s) => s.startsWith(`t/${p}/`))).sort(),
    objects,
  };

  const tmp = join(dirname(output), `.${basename(output)}.${crypto.randomUUID()}.part`);
  try {
    const pacer = new MemoryPacer();
    const { readable, controller } = createTarPacker();
    const writing = pipeline(
      Readable.fromWeb(readable),
      createGzip({ level: 1 }),
      createWriteStream(tmp, { flags: "wx" }),
    );
    const add = async (path: string, size: number, body: Uint8Array | ReadableStream<Uint8Array>) => {
      const stream = controller.add({
        name: path,
        size,
        mtime: ENTRY_TIME,
        mode: 0o644,
        uid: 0,
        gid: 0,
        uname: "",
        gname: "",
        type: "file",
      });
      if (body instanceof Uint8Array) {
        const writer = stream.getWriter();
        await writer.write(body);
        await writer.close();
      } else {
        await body.pipeTo(stream);
      }
    };
    // Signed, the manifest covers every byte the bundle can bring in: each object's sha256 is in it.
    const manifestText = JSON.stringify(manifest, null, 1) + "\n";
    const manifestBytes = enc.encode(
      options.sign ? await signDocument(manifestText, options.sign, options.now) : manifestText,
    );
    const packing = (async () => {
      await add(MANIFEST_ENTRY, manifestBytes.byteLength, manifestBytes);
      for (const object of objects) {
        const source = sources.get(object.path)!;
        if ("bytes" in source) await add(object.path, object.size, source.bytes);
        else await add(object.path, object.size, await packStream(app.store, source.key, pacer));
      }
      controller.finalize();
    })();
    await Promise.all([packing, writing]);
    const file = await Deno.open(tmp, { read: true, write: true });
    await file.sync();
    file.close();
    await Deno.rename(tmp, output);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  const bytes = (await Deno.stat(output)).size;
  return { output, objects: objects.length, bytes, missing, written: true, signedBy: options.sign?.keyId };
}

/** The merged index.json limited to `names`; entries the cache has no index for are made from the manifests. */
async function indexFor(app: App, names: Set<string>, served: Map<string, Uint8Array>): Promise<Uint8Array> {
  let doc: { v?: number; updated?: number; packages?: Record<string, unknown>[] } = {};
  const res = await app.handler(new Request("http://mipserver.invalid/index.json"));
  if (res.status === 200) doc = JSON.parse(await res.text());
  else await res.body?.cancel();
  const packages = (doc.packages ?? []).filter((p) => names.has(p.name as string));
  const listed = new Set(packages.map((p) => p.name));
  for (const name of [...names].sort()) {
    if (listed.has(name)) continue;
    const latest = [...served.entries()].find(([path]) =>
      new RegExp(`^package/[^/]+/${name.replace(/[.]/g, "\\.")}/latest\\.json$`).test(path)
    );
    const version = latest ? String(JSON.parse(dec.decode(latest[1])).version ?? "") : "";
    packages.push({ name, version, description: "", author: "", license: "", versions: {} });
  }
  packages.sort((a, b) => byText(String(a.name), String(b.name)));
  return enc.encode(JSON.stringify({ v: doc.v ?? 2, updated: doc.updated ?? 0, packages }));
}
