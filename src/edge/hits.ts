/**
 * Cache hits recorded in batches. A hit the front answers (`plain.ts`) costs a few microseconds to answer, and
 * recording it (the request ring, the metrics, the install records, a log line) cost as much again when done between
 * one connection's system calls and the next: each step ran with cold processor caches. The front notes each hit here
 * in a few preallocated arrays instead, and the batch records them one after the other, within
 * {@linkcode HITS_MS} ms or once {@linkcode HITS_KEPT} are waiting, and whenever asked (`drain`): before the thread's
 * next other record (see `RequestLog.catchUp`), before the figures are read (`Listener.flush`) and at shutdown. So
 * the order of the records and every figure read are as if each hit were recorded at once; only a log line may come
 * up to {@linkcode HITS_MS} ms after its answer.
 * @module
 */
import type { Recorder } from "../http/server.ts";
import type { Shareable } from "../http/responses.ts";
import { hitEntry } from "./edge.ts";

/** Hits noted at most before they are recorded. */
export const HITS_KEPT = 256;
/** How long a hit may wait before it is recorded, in ms. */
export const HITS_MS = 10;

/** Notes cache hits and records them in batches through a {@linkcode Recorder}. */
export class HitBatch {
  #record: Recorder;
  #shared: (Shareable | undefined)[] = new Array(HITS_KEPT).fill(undefined);
  #method: string[] = new Array(HITS_KEPT).fill("");
  #path: string[] = new Array(HITS_KEPT).fill("");
  #client: string[] = new Array(HITS_KEPT).fill("");
  #status = new Uint16Array(HITS_KEPT);
  #time = new Float64Array(HITS_KEPT);
  #duration = new Float64Array(HITS_KEPT);
  #peer = new Uint8Array(HITS_KEPT);
  #count = 0;
  #draining = false;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(record: Recorder) {
    this.#record = record;
  }

  /** Hits noted and not yet recorded. */
  get waiting(): number {
    return this.#count;
  }

  /** Notes a hit answered now: it is recorded with this moment's duration (`peer`: another mipserver asked). */
  add(
    shared: Shareable,
    method: string,
    path: string,
    client: string,
    status: number,
    time: number,
    started: number,
    peer = false,
  ) {
    const i = this.#count++;
    this.#shared[i] = shared;
    this.#method[i] = method;
    this.#path[i] = path;
    this.#client[i] = client;
    this.#status[i] = status;
    this.#time[i] = time;
    this.#duration[i] = performance.now() - started;
    this.#peer[i] = peer ? 1 : 0;
    if (this.#count === HITS_KEPT) this.drain();
    else this.#timer ??= setTimeout(() => this.drain(), HITS_MS);
  }

  /** Records every hit noted so far, in the order they came. Does nothing when called from within a drain. */
  drain(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#draining || this.#count === 0) return;
    this.#draining = true;
    try {
      for (let i = 0; i < this.#count; i++) {
        const shared = this.#shared[i]!;
        this.#shared[i] = undefined;
        const entry = hitEntry(shared, {
          method: this.#method[i],
          path: this.#path[i],
          client: this.#client[i],
          status: this.#status[i],
          time: this.#time[i],
          durationMs: this.#duration[i],
          peer: this.#peer[i] === 1,
        });
        try {
          this.#record(entry, shared.kind);
        } catch {
          // A sink that fails (stdout closed, say) loses this record; the request was answered, the others go on.
        }
      }
    } finally {
      this.#count = 0;
      this.#draining = false;
    }
  }
}
