/**
 * Just enough HTTP/1 for the edge's own connections (`front.ts`): it reads the request heads of plain GET and HEAD
 * requests and writes whole responses, head and body in one write. Anything else it does not try to read: it says
 * "other", and the connection goes to `Deno.serve` as it is. A parse here therefore only ever has to be right for
 * the plain case, and is strict: CRLF line ends, ASCII, token header names, origin-form targets, no body.
 * @module
 */

/** A plain request: GET or HEAD, no body, HTTP/1.0 or 1.1, one Host that is a plain authority. */
export interface PlainRequest {
  method: "GET" | "HEAD";
  /** The request target as sent (path and query). */
  target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minor: 0 | 1;
  host: string;
  /** Header fields as sent, names lower-cased, in order. */
  headers: [string, string][];
  /** If-None-Match, with repeated fields joined by ", " (null when absent). */
  ifNoneMatch: string | null;
  /** Whether the connection stays open after the answer. */
  keepAlive: boolean;
  /** Bytes of the head, blank line included. */
  length: number;
}

/** What {@linkcode readHead} found at the start of a buffer. */
export type HeadResult =
  | { kind: "plain"; request: PlainRequest }
  /** No blank line yet; read more. */
  | { kind: "incomplete" }
  /** Not a plain request, or not read here: hand the connection on. */
  | { kind: "other" };

const CR = 13;
const LF = 10;
const decoder = new TextDecoder();
const REQUEST_LINE = /^(GET|HEAD) (\/[!-~]*) HTTP\/1\.([01])$/;
const FIELD = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*$/;
/** A Host that makes a valid authority on its own: a name or address, an IPv6 literal, an optional port. */
const HOST = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?$/;
/** Fields that give a request a body or change the protocol: such requests are not plain. */
const NOT_PLAIN = new Set(["content-length", "transfer-encoding", "expect", "upgrade"]);

/**
 * Reads the request head at the start of `buf[0, end)`. Every byte of the head must be printable ASCII, a space or
 * a tab, and every line must end in CRLF; anything else (bare LF, control bytes, UTF-8, obsolete line folding) is
 * "other". So is a head longer than `maxHead` bytes.
 */
export function readHead(buf: Uint8Array, end: number, maxHead = 8192): HeadResult {
  let blank = -1;
  const limit = Math.min(end, maxHead);
  for (let i = 0; i < limit; i++) {
    const b = buf[i];
    if (b >= 0x20 && b < 0x7f) continue;
    if (b === 9) continue;
    if (b === CR) {
      if (i + 1 >= end) break;
      if (buf[i + 1] !== LF) return { kind: "other" };
      if (i >= 2 && buf[i - 1] === LF && buf[i - 2] === CR) {
        blank = i;
        break;
      }
      i++;
      continue;
    }
    return { kind: "other" };
  }
  if (blank < 0) return end >= maxHead ? { kind: "other" } : { kind: "incomplete" };
  // The head is ASCII: decode it once, without the CRLF that ends its last field and the blank line.
  const lines = decoder.decode(buf.subarray(0, blank - 2)).split("\r\n");
  const first = REQUEST_LINE.exec(lines[0]);
  if (!first || first[2].includes("#")) return { kind: "other" };
  const headers: [string, string][] = [];
  let host: string | undefined;
  let hosts = 0;
  let ifNoneMatch: string | null = null;
  let close = false;
  let keepAliveAsked = false;
  for (let i = 1; i < lines.length; i++) {
    const field = FIELD.exec(lines[i]);
    if (!field) return { kind: "other" };
    const name = field[1].toLowerCase();
    const value = field[2];
    if (NOT_PLAIN.has(name)) return { kind: "other" };
    headers.push([name, value]);
    if (name === "host") {
      host = value;
      hosts++;
    } else if (name === "if-none-match") {
      ifNoneMatch = ifNoneMatch === null ? value : `${ifNoneMatch}, ${value}`;
    } else if (name === "connection") {
      for (const token of value.toLowerCase().split(",")) {
        const t = token.trim();
        if (t === "close") close = true;
        else if (t === "keep-alive") keepAliveAsked = true;
      }
    }
  }
  // One Host, plain: the edge keys answers by Host and target, and both must read the same to Deno.serve.
  if (hosts !== 1 || host === undefined || !HOST.test(host)) return { kind: "other" };
  const minor = first[3] === "1" ? 1 : 0;
  return {
    kind: "plain",
    request: {
      method: first[1] as "GET" | "HEAD",
      target: first[2],
      minor,
      host,
      headers,
      ifNoneMatch,
      keepAlive: minor === 1 ? !close : keepAliveAsked && !close,
      length: blank + 2,
    },
  };
}

/** An answer ready to be written: status, header lines (`name: value\r\n` each, Content-Length included), body. */
export interface Answer {
  status: number;
  /** The encoded header lines, without Date, Connection or the blank line. */
  fields: Uint8Array;
  /** The body of a GET (a HEAD gets the same fields without it); null for none. */
  body: Uint8Array | null;
  /**
   * Whether the answer is given again and again (the edge's kept answers): its response bytes are then made once
   * per kind of request and per second, not once per request.
   */
  repeated?: boolean;
}

const encoder = new TextEncoder();

/** Reason phrases, as Deno.serve sends them. */
const REASONS: Record<number, string> = {
  200: "OK",
  204: "No Content",
  206: "Partial Content",
  301: "Moved Permanently",
  302: "Found",
  304: "Not Modified",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  406: "Not Acceptable",
  408: "Request Timeout",
  409: "Conflict",
  410: "Gone",
  413: "Payload Too Large",
  414: "URI Too Long",
  415: "Unsupported Media Type",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
};

/**
 * Encodes response header fields as `name: value\r\n` lines in the order given. A Content-Length is added after
 * them when `bodyLength` is given and the fields have none; Date, Connection and Transfer-Encoding are left out
 * (the writer adds the first two; bodies are never chunked).
 */
export function encodeFields(fields: Iterable<[string, string]>, bodyLength?: number): Uint8Array {
  let text = "";
  let hasLength = false;
  for (const [name, value] of fields) {
    const n = name.toLowerCase();
    if (n === "date" || n === "connection" || n === "transfer-encoding") continue;
    if (n === "content-length") hasLength = true;
    text += `${n}: ${value}\r\n`;
  }
  if (!hasLength && bodyLength !== undefined) text += `content-length: ${bodyLength}\r\n`;
  return encoder.encode(text);
}

/** Whether a response with `status` carries no body whatever its headers say (1xx, 204, 304). */
export function bodiless(status: number): boolean {
  return status < 200 || status === 204 || status === 304;
}

const statusLines = new Map<number, Uint8Array>();

/** Response bytes made for repeated answers: per answer, the Date line they were made with, and per kind. */
const made = new WeakMap<Answer, { date: Uint8Array; bytes: (Uint8Array | undefined)[]; count: number }>();
/** Kinds of response kept per repeated answer and second (the edge's budget counts this many copies). */
export const KINDS_KEPT = 2;

/**
 * The bytes of a whole response to `request`: status line in the request's HTTP version, the answer's fields,
 * `date`, `connection` when it differs from the version's default, the blank line, and the body unless the request
 * is a HEAD or the status has none. One buffer, so that one write sends it all. The buffer is not to be changed:
 * for a repeated answer, the next request of the same kind gets the same one within the same second (for the first
 * two kinds of request asked for in that second; a client seldom mixes more).
 */
export function responseBytes(request: PlainRequest, answer: Answer, date: Uint8Array): Uint8Array {
  if (!answer.repeated) return build(request, answer, date);
  let kinds = made.get(answer);
  if (kinds === undefined || kinds.date !== date) {
    kinds = { date, bytes: [], count: 0 };
    made.set(answer, kinds);
  }
  const kind = (request.method === "HEAD" ? 4 : 0) + request.minor * 2 + (request.keepAlive ? 1 : 0);
  const kept = kinds.bytes[kind];
  if (kept !== undefined) return kept;
  const bytes = build(request, answer, date);
  if (kinds.count < KINDS_KEPT) {
    kinds.bytes[kind] = bytes;
    kinds.count++;
  }
  return bytes;
}

function build(request: PlainRequest, answer: Answer, date: Uint8Array): Uint8Array {
  const key = answer.status * 2 + request.minor;
  let statusLine = statusLines.get(key);
  if (statusLine === undefined) {
    const reason = REASONS[answer.status] ?? "";
    statusLine = encoder.encode(`HTTP/1.${request.minor} ${answer.status} ${reason}\r\n`);
    statusLines.set(key, statusLine);
  }
  const connection = request.minor === 1
    ? (request.keepAlive ? EMPTY : CLOSE)
    : (request.keepAlive ? KEEP_ALIVE : EMPTY);
  const body = request.method === "HEAD" || bodiless(answer.status) || answer.body === null ? EMPTY : answer.body;
  const out = new Uint8Array(
    statusLine.length + answer.fields.length + date.length + connection.length + 2 + body.length,
  );
  let at = 0;
  for (const part of [statusLine, answer.fields, date, connection, CRLF, body]) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

const EMPTY = new Uint8Array(0);
const CRLF = encoder.encode("\r\n");
const CLOSE = encoder.encode("connection: close\r\n");
const KEEP_ALIVE = encoder.encode("connection: keep-alive\r\n");

/** The `date: ...\r\n` line for the current second, encoded once per second. */
export function dateLine(now: () => number = Date.now): () => Uint8Array {
  let second = -1;
  let line = EMPTY;
  return () => {
    const ms = now();
    const s = Math.floor(ms / 1000);
    if (s !== second) {
      second = s;
      line = encoder.encode(`date: ${new Date(s * 1000).toUTCString()}\r\n`);
    }
    return line;
  };
}
