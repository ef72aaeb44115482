/**
 * The store compliance suite (`compliance.ts`) against each embedded backend: one line each. Backends that need a
 * server run it from a file of their own.
 */
import { DiskStore } from "../../src/store/disk/mod.ts";
import { denoFs, type StoreFs } from "../../src/store/disk/fs.ts";
import { MemoryStore } from "../../src/store/memory/mod.ts";
import { tempDir } from "../helpers.ts";
import { type Harness, reopenable, storeCompliance } from "./compliance.ts";

/** A disk store in a new folder; its file system layer fails the next rename (the commit) when asked. */
const disk: Harness = {
  make(options) {
    const dir = tempDir("mipserver-store-");
    let failNext = false;
    const fs: StoreFs = {
      ...denoFs,
      rename(from, to) {
        if (!failNext) return denoFs.rename(from, to);
        failNext = false;
        return Promise.reject(new Error("Simulated crash before the rename"));
      },
    };
    const open = async () => {
      const store = new DiskStore(dir, { ...options, fs });
      await store.open();
      return store;
    };
    return reopenable(open, () => (failNext = true), () => Deno.remove(dir, { recursive: true }).catch(() => {}));
  },
};

/** A memory store; a restart is the same instance (memory holds what it holds for the life of the process). */
const memory: Harness = {
  make(options) {
    let failNext = false;
    const store = new MemoryStore({
      ...options,
      beforeCommit() {
        if (!failNext) return;
        failNext = false;
        throw new Error("Simulated crash before the commit");
      },
    });
    return Promise.resolve({
      store,
      reopen: () => Promise.resolve(store),
      failNextCommit: () => (failNext = true),
      close: () => Promise.resolve(),
    });
  },
};

storeCompliance("disk", disk);
storeCompliance("memory", memory);
