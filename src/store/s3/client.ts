/**
 * A thin S3 client over the standard `fetch`: signed requests (`sigv4.ts`) to one bucket, path-style or
 * virtual-hosted, with a timeout on every attempt, bounded retries with backoff on network errors and 5xx answers (and
 * the 4xx S3 documents as retryable), and ListObjectsV2 pages. Every failure is an {@linkcode S3Error}, an
 * `Unavailable` whose message names the bucket and the cause and never the credentials.
 * @module
 */
import { Unavailable } from "../../errors.ts";
import { type Credentials, EMPTY_SHA256, sha256Hex, SigV4Signer, uriEncode } from "./sigv4.ts";

/** Where the bucket is and how to reach it. */
export interface S3ClientOptions extends Credentials {
  /** The service's URL (`http://127.0.0.1:8333`); null for AWS itself (`https://s3.{region}.amazonaws.com`). */
  endpoint: string | null;
  region: string;
  bucket: string;
  /** Address the bucket in the path (`/bucket/key`) rather than in the host name (`bucket.host/key`). */
  pathStyle: boolean;
  /** How long one attempt may take, headers and body, in ms (default 30 s). */
  timeoutMs?: number;
  /** How many times a failed request is tried again (default 3). */
  retries?: number;
  /** The fetch requests go through (default: the global one). */
  fetch?: typeof fetch;
  /** Told of every attempt: its method, status (0: no answer) and seconds to the headers. */
  onRequest?: (method: string, status: number, seconds: number) => void;
}

/** An answer read whole. */
export interface S3Response {
  status: number;
  headers: Headers;
  body: Uint8Array;
}

/** One request's parts. */
export interface S3RequestOptions {
  query?: Record<string, string>;
  headers?: Record<string, string>;
  body?: Uint8Array;
  /** The body's lowercase hex sha256, when the caller has it already. */
  payloadHash?: string;
  /** Statuses returned as answers rather than thrown (404 for a lookup, 412 for a conditional write). */
  accept?: number[];
}

/** An object of a listing. */
export interface S3Object {
  /** The full key in the bucket. */
  key: string;
  size: number;
  /** Its Last-Modified time, ms since the epoch. */
  lastModified: number;
}

/** One ListObjectsV2 page. */
export interface S3ListPage {
  objects: S3Object[];
  /** The continuation token of the next page, absent on the last one. */
  next?: string;
}

/** A failed S3 request: the status (0 when none came) and S3's error code, with a message a person reads. */
export class S3Error extends Unavailable {
  readonly status: number;
  readonly code: string;
  constructor(message: string, status: number, code: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Error codes S3 documents as worth trying again although their status is a 4xx. */
const RETRYABLE_CODES = new Set(["RequestTimeout", "RequestTimeTooSkewed", "SlowDown", "ConditionalRequestConflict"]);

/** Requests to one bucket. */
export class S3Client {
  readonly bucket: string;
  /** The endpoint as shown in messages: its origin and path, never user information. */
  readonly endpoint: string;
  #base: URL;
  #pathStyle: boolean;
  #signer: SigV4Signer;
  #timeoutMs: number;
  #retries: number;
  #fetch: typeof fetch;
  #onRequest?: (method: string, status: number, seconds: number) => void;

  constructor(options: S3ClientOptions) {
    this.bucket = options.bucket;
    const base = new URL(options.endpoint ?? `https://s3.${options.region}.amazonaws.com`);
    base.username = "";
    base.password = "";
    base.search = "";
    base.hash = "";
    this.#base = base;
    this.endpoint = `${base.origin}${base.pathname.replace(/\/$/, "")}`;
    this.#pathStyle = options.pathStyle;
    this.#signer = new SigV4Signer(options, options.region);
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#retries = options.retries ?? 3;
    this.#fetch = options.fetch ?? fetch;
    this.#onRequest = options.onRequest;
  }

  /** The URL of `key` in the bucket (the bucket itself when null), with `query`, encoded as it is signed. */
  url(key: string | null, query: Record<string, string> = {}): URL {
    const url = new URL(this.#base);
    const keyPath = key === null ? "" : uriEncode(key, true);
    const basePath = url.pathname.replace(/\/$/, "");
    if (this.#pathStyle) {
      url.pathname = `${basePath}/${uriEncode(this.bucket)}${key === null ? "" : `/${keyPath}`}`;
    } else {
      url.hostname = `${this.bucket}.${url.hostname}`;
      url.pathname = `${basePath}/${keyPath}`;
    }
    const qs = Object.entries(query).map(([n, v]) => `${uriEncode(n)}=${uriEncode(v)}`).join("&");
    url.search = qs === "" ? "" : `?${qs}`;
    return url;
  }

  /** Where a request went, for messages: `s3://bucket/key`. */
  where(key: string | null): string {
    return `s3://${this.bucket}/${key ?? ""}`;
  }

  /**
   * Sends one request and reads its answer whole, trying again after network errors, timeouts, 5xx answers and the
   * retryable codes; a 2xx or an accepted status is returned, anything else thrown as an {@linkcode S3Error}.
   */
  async request(method: string, key: string | null, options: S3RequestOptions = {}): Promise<S3Response> {
    const copy = options.headers !== undefined &&
      Object.keys(options.headers).some((h) => h.toLowerCase() === "x-amz-copy-source");
    return await this.#attempts<S3Response>(method, key, options, async (response) => {
      const body = new Uint8Array(await response.arrayBuffer());
      // A copy may answer 200 and report its failure in the body (S3 documents it): an internal error, retried.
      if (
        copy && response.ok && /^\s*(<\?xml[^>]*>\s*)?<Error>/.test(new TextDecoder().decode(body.subarray(0, 512)))
      ) {
        return { fail: this.#error(method, key, 500, body) };
      }
      return { value: { status: response.status, headers: response.headers, body } };
    }, options.accept ?? []);
  }

  /**
   * Opens an object's body as a stream, or undefined on 404. The timeout applies to the headers and then to each
   * pause between pieces of the body; the stream must be read to its end or cancelled.
   */
  async stream(key: string): Promise<ReadableStream<Uint8Array> | undefined> {
    return await this.#attempts<ReadableStream<Uint8Array> | undefined>("GET", key, {}, (response, idle) => {
      if (response.status === 404) {
        idle.stop();
        return response.body?.cancel().then(() => ({ value: undefined })) ?? { value: undefined };
      }
      const reset = idle.reset;
      const piped = response.body!.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, controller) {
            reset();
            controller.enqueue(chunk);
          },
          flush() {
            idle.stop();
          },
          cancel() {
            idle.stop();
          },
        }),
      );
      return { value: piped, keepTimer: true };
    }, [404]);
  }

  async #attempts<T>(
    method: string,
    key: string | null,
    options: S3RequestOptions,
    take: (response: Response, idle: IdleTimer) => Answer<T> | Promise<Answer<T>>,
    accept: number[],
  ): Promise<T> {
    const url = this.url(key, options.query);
    const payloadHash = options.payloadHash ?? (options.body ? await sha256Hex(options.body) : EMPTY_SHA256);
    for (let attempt = 0;; attempt++) {
      let failure: S3Error;
      const idle = new IdleTimer(this.#timeoutMs);
      let keepTimer = false;
      const started = performance.now();
      let status = 0;
      try {
        const headers = await this.#signer.sign({ method, url, headers: options.headers, payloadHash });
        delete headers["host"];
        const response = await this.#fetch(url, {
          method,
          headers,
          body: options.body as Uint8Array<ArrayBuffer> | undefined,
          signal: idle.signal,
          redirect: "manual",
        });
        status = response.status;
        if (response.ok || accept.includes(response.status)) {
          const answer = await take(response, idle);
          if ("value" in answer) {
            keepTimer = answer.keepTimer === true;
            return answer.value;
          }
          failure = answer.fail;
        } else {
          failure = this.#error(method, key, response.status, new Uint8Array(await response.arrayBuffer()));
          if (!retryable(failure)) throw failure;
        }
      } catch (e) {
        if (e instanceof S3Error) throw e;
        const why = idle.signal.aborted
          ? `no answer within ${this.#timeoutMs} ms`
          : e instanceof Error
          ? e.message
          : String(e);
        failure = new S3Error(`S3 store unreachable: ${why} (${method} ${this.where(key)})`, 0, "");
      } finally {
        if (!keepTimer) idle.stop();
        this.#onRequest?.(method, status, (performance.now() - started) / 1000);
      }
      if (attempt >= this.#retries) throw failure;
      await new Promise((r) => setTimeout(r, backoff(attempt)));
    }
  }

  #error(method: string, key: string | null, status: number, body: Uint8Array): S3Error {
    const text = new TextDecoder().decode(body.subarray(0, 4096));
    const code = xmlValue(text, "Code") ?? (status === 404 ? "NotFound" : status === 412 ? "PreconditionFailed" : "");
    const message = xmlValue(text, "Message");
    const detail = [code, message && `(${message})`].filter(Boolean).join(" ");
    return new S3Error(
      `S3 answered ${status}${detail ? ` ${detail}` : ""} to ${method} ${this.where(key)}`,
      status,
      code,
    );
  }

  /** One ListObjectsV2 page of the keys under `prefix`, after `startAfter` or from a continuation token. */
  async list(
    prefix: string,
    options: { startAfter?: string; token?: string; maxKeys?: number } = {},
  ): Promise<S3ListPage> {
    const query: Record<string, string> = { "list-type": "2", prefix };
    if (options.maxKeys !== undefined) query["max-keys"] = String(options.maxKeys);
    if (options.token !== undefined) query["continuation-token"] = options.token;
    else if (options.startAfter !== undefined) query["start-after"] = options.startAfter;
    const answer = await this.request("GET", null, { query });
    const text = new TextDecoder().decode(answer.body);
    const objects: S3Object[] = [];
    for (const m of text.matchAll(/<Contents>([\s\S]*?)<\/Contents>/g)) {
      const key = xmlValue(m[1], "Key");
      if (key === undefined) continue;
      objects.push({
        key,
        size: Number(xmlValue(m[1], "Size") ?? 0),
        lastModified: Date.parse(xmlValue(m[1], "LastModified") ?? "") || 0,
      });
    }
    const truncated = xmlValue(text, "IsTruncated") === "true";
    const next = xmlValue(text, "NextContinuationToken");
    return truncated && next ? { objects, next } : { objects };
  }

  /** Every object under `prefix`, page by page. */
  async *objects(prefix: string, startAfter?: string): AsyncGenerator<S3Object> {
    let page = await this.list(prefix, { startAfter });
    while (true) {
      yield* page.objects;
      if (page.next === undefined) return;
      page = await this.list(prefix, { token: page.next });
    }
  }
}

type Answer<T> = { value: T; keepTimer?: boolean } | { fail: S3Error };

/** An abort after `ms` without progress: restarted on each piece of a body, stopped once done. */
class IdleTimer {
  #controller = new AbortController();
  #timer?: ReturnType<typeof setTimeout>;
  #ms: number;
  constructor(ms: number) {
    this.#ms = ms;
    this.reset();
  }
  get signal(): AbortSignal {
    return this.#controller.signal;
  }
  reset = (): void => {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#controller.abort(new DOMException("Timed out", "TimeoutError")), this.#ms);
  };
  stop(): void {
    clearTimeout(this.#timer);
  }
}

function retryable(e: S3Error): boolean {
  return e.status >= 500 || e.status === 429 || RETRYABLE_CODES.has(e.code);
}

/** Exponential backoff with jitter: about 100 ms, 200 ms, 400 ms, ... up to 5 s. */
function backoff(attempt: number): number {
  const base = Math.min(5_000, 100 * 2 ** attempt);
  return base / 2 + Math.random() * (base / 2);
}

/** The text of the first `<tag>` in `xml`, entities decoded. */
export function xmlValue(xml: string, tag: string): string | undefined {
  const m = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(xml);
  return m ? decodeEntities(m[1]) : undefined;
}

function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);/g, (_, e: string) => {
    if (e.startsWith("#x")) return String.fromCodePoint(parseInt(e.slice(2), 16));
    if (e.startsWith("#")) return String.fromCodePoint(parseInt(e.slice(1), 10));
    return { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" }[e]!;
  });
}
