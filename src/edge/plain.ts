/**
 * The edge for the requests `front.ts` reads itself: what `createEdgeHandler` (`edge.ts`) does for `Deno.serve`
 * requests, without building a Request or a Response, in the same cache. A kept answer is encoded once and answered
 * at once; anything else goes to `miss`, which the main thread answers with the handler and a worker thread by
 * asking the main thread.
 * @module
 */
import { etagMatches } from "../http/responses.ts";
import type { Shareable } from "../http/responses.ts";
import { type EdgeCache, edgeKey } from "./edge.ts";
import { type Answer, bodiless, encodeFields, type PlainRequest } from "./h1.ts";
import type { HitBatch } from "./hits.ts";

/** The encoded 200 and 304 answers of each kept answer, made when first needed. */
const encoded = new WeakMap<Shareable, { ok: Answer; notModified: Answer }>();

function encodedOf(shared: Shareable): { ok: Answer; notModified: Answer } {
  let answers = encoded.get(shared);
  if (answers === undefined) {
    answers = {
      ok: {
        status: 200,
        fields: encodeFields(Object.entries(shared.headers), shared.body.length),
        body: shared.body,
        repeated: true,
      },
      notModified: {
        status: 304,
        fields: encodeFields(Object.entries(shared.notModified)),
        body: null,
        repeated: true,
      },
    };
    encoded.set(shared, answers);
  }
  return answers;
}

/** An answer not kept by the edge: status, header fields and body, and the shareable answer if the handler gave one. */
export interface Missed {
  status: number;
  headers: Iterable<[string, string]>;
  body: Uint8Array | null;
  shared?: Shareable;
}

/** Answers a request the edge does not keep an answer for. */
export type Miss = (request: PlainRequest, client: Deno.NetAddr) => Promise<Missed>;

/** The answer `front.ts` writes for a missed request: Content-Length always, as `Deno.serve` would send it. */
export function missAnswer(missed: Missed): Answer {
  const length = missed.body?.length ?? (bodiless(missed.status) ? undefined : 0);
  return { status: missed.status, fields: encodeFields(missed.headers, length), body: missed.body };
}

/**
 * The `answer` of a `Front` (`front.ts`): kept answers from `cache`, at once and not as a promise (noted in `hits`,
 * which records them), the rest from `miss`.
 */
export function plainAnswerer(cache: EdgeCache, hits: HitBatch, miss: Miss) {
  const answerMiss = async (key: string, request: PlainRequest, client: Deno.NetAddr): Promise<Answer> => {
    const missed = await miss(request, client);
    if (missed.shared) cache.put(key, missed.shared);
    return missAnswer(missed);
  };
  return (request: PlainRequest, client: Deno.NetAddr): Answer | Promise<Answer> => {
    const started = performance.now();
    const key = edgeKey(request.host, request.target);
    const shared = cache.get(key);
    if (shared === undefined) return answerMiss(key, request, client);
    const answers = encodedOf(shared);
    const answer = etagMatches(request.ifNoneMatch, shared.etag) ? answers.notModified : answers.ok;
    hits.add(shared, request.method, request.target, client.hostname, answer.status, Date.now(), started, request.peer);
    return answer;
  };
}
