/**
 * Just enough HTTP/1 for the edge's own connections (`front.ts`): it reads the request heads of plain GET and HEAD
 * requests and writes whole responses, head and body in one write. Anything else it does not try to read: it says
 * "other", and the connection goes to `Deno.serve` as it is. A parse here therefore only ever has to be right for
 * the plain case, and is strict: CRLF line ends, ASCII, token header names, origin-form targets, no body.
 * @module
 */

/** A `User-Agent` field that starts with `mipserver`, in a head (every field follows a CRLF). */
const PEER_FIELD = /\r\nuser-agent:[ \t]*mipserver/i;

/** A plain request: GET or HEAD, no body, HTTP/1.0 or 1.1, one Host that is a plain authority. */
export class PlainRequest {
  /** The head as sent, up to its blank line: the header fields are read from it only when asked for. */
  #head: string;
  /** Where the header fields start in `#head`. */
  #fieldsAt: number;
  #headers?: [string, string][];

  constructor(
    /** GET or HEAD. */
    readonly method: "GET" | "HEAD",
    /** The request target as sent (path and query). */
    readonly target: string,
    /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
    readonly minor: 0 | 1,
    /** The Host field, as sent. */
    readonly host: string,
    /** If-None-Match, with repeated fields joined by ", " (null when absent). */
    readonly ifNoneMatch: string | null,
    /** Whether the connection stays open after the answer. */
    readonly keepAlive: boolean,
    /** Bytes of the head, blank line included. */
    readonly length: number,
    head: string,
    fieldsAt: number,
  ) {
    this.#head = head;
    this.#fieldsAt = fieldsAt;
  }

  /** Whether another mipserver asked (a `User-Agent` starting with `mipserver`, see `isPeer`). */
  get peer(): boolean {
    // Most heads do not hold the word at all: one search; the others are matched on the head as sent, without
    // reading every field (a Host named mipserver is no peer).
    return this.#head.includes("mipserver") && PEER_FIELD.test(this.#head);
  }

  /** Header fields as sent, names lower-cased, in order (values without the whitespace around them). */
  get headers(): [string, string][] {
    if (this.#headers === undefined) {
      this.#headers = [];
      const head = this.#head;
      for (let at = this.#fieldsAt; at < head.length;) {
        let end = head.indexOf("\r\n", at);
        if (end < 0) end = head.length;
        const colon = head.indexOf(":", at);
        this.#headers.push([head.slice(at, colon).toLowerCase(), trimOws(head.slice(colon + 1, end))]);
        at = end + 2;
      }
    }
    return this.#headers;
  }
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
const SP = 32;
const HT = 9;
const OTHER: HeadResult = { kind: "other" };
const INCOMPLETE: HeadResult = { kind: "incomplete" };
const decoder = new TextDecoder();
/** The bytes of a header field name (RFC 9110 `tchar`): 1 for each. */
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") {
  TCHAR[c.charCodeAt(0)] = 1;
}
/** A Host that makes a valid authority on its own: a name or address, an IPv6 literal, an optional port. */
const HOST = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?$/;

/** The header fields {@linkcode readHead} looks at: any other, Host, If-None-Match, Connection. */
const OTHER_FIELD = 0;
const HOST_FIELD = 1;
const IF_NONE_MATCH = 2;
const CONNECTION = 3;
/** Content-Length, Transfer-Encoding, Expect, Upgrade: a body or another protocol, so not a plain request. */
const NOT_PLAIN = 4;

/** Field names {@linkcode readHead} knows, lower-case, by length. */
const KNOWN: Map<number, [Uint8Array, number][]> = new Map();
for (
  const [name, field] of [
    ["host", HOST_FIELD],
    ["if-none-match", IF_NONE_MATCH],
    ["connection", CONNECTION],
    ["content-length", NOT_PLAIN],
    ["transfer-encoding", NOT_PLAIN],
    ["expect", NOT_PLAIN],
    ["upgrade", NOT_PLAIN],
  ] as const
) {
  const list = KNOWN.get(name.length) ?? [];
  list.push([new TextEncoder().encode(name), field]);
  KNOWN.set(name.length, list);
}

/** Which known field `buf[from, to)` names, ASCII case ignored. */
function fieldOf(buf: Uint8Array, from: number, to: number): number {
  const known = KNOWN.get(to - from);
  if (known === undefined) return OTHER_FIELD;
  outer: for (const [name, field] of known) {
    for (let i = 0; i < name.length; i++) {
      const b = buf[from + i];
      // Upper-case letters read as lower-case; the names hold no byte that this could make match wrongly.
      if ((b >= 65 && b <= 90 ? b + 32 : b) !== name[i]) continue outer;
    }
    return field;
  }
  return OTHER_FIELD;
}

function trimOws(value: string): string {
  let from = 0;
  let to = value.length;
  while (from < to && (value.charCodeAt(from) === SP || value.charCodeAt(from) === HT)) from++;
  while (to > from && (value.charCodeAt(to - 1) === SP || value.charCodeAt(to - 1) === HT)) to--;
  return value.slice(from, to);
}

/**
 * Reads the request head at the start of `buf[0, end)`. Every byte of the head must be printable ASCII, a space or
 * a tab, and every line must end in CRLF; anything else (bare LF, control bytes, UTF-8, obsolete line folding) is
 * "other". So is a head longer than `maxHead` bytes. The head is read from its bytes in one pass, and decoded once.
 */
export function readHead(buf: Uint8Array, end: number, maxHead = 8192): HeadResult {
  let blank = -1;
  const limit = Math.min(end, maxHead);
  for (let i = 0; i < limit; i++) {
    const b = buf[i];
    if (b >= 0x20 && b < 0x7f) continue;
    if (b === HT) continue;
    if (b === CR) {
      if (i + 1 >= end) break;
      if (buf[i + 1] !== LF) return OTHER;
      if (i >= 2 && buf[i - 1] === LF && buf[i - 2] === CR) {
        blank = i;
        break;
      }
      i++;
      continue;
    }
    return OTHER;
  }
  if (blank < 0) return end >= maxHead ? OTHER : INCOMPLETE;
  // From here on every CR is followed by LF, and the head's last field (or its request line) ends at `blank - 2`.
  // The request line: `GET` or `HEAD`, one space, an origin-form target of visible ASCII without `#`, one space,
  // `HTTP/1.0` or `HTTP/1.1`.
  let method: "GET" | "HEAD";
  let i: number;
  if (buf[0] === 71 && buf[1] === 69 && buf[2] === 84 && buf[3] === SP) {
    method = "GET";
    i = 4;
  } else if (buf[0] === 72 && buf[1] === 69 && buf[2] === 65 && buf[3] === 68 && buf[4] === SP) {
    method = "HEAD";
    i = 5;
  } else return OTHER;
  const targetAt = i;
  if (buf[i] !== 47) return OTHER;
  for (; buf[i] > SP && buf[i] < 0x7f; i++) if (buf[i] === 35) return OTHER;
  const targetEnd = i;
  if (
    buf[i] !== SP || buf[i + 1] !== 72 || buf[i + 2] !== 84 || buf[i + 3] !== 84 || buf[i + 4] !== 80 ||
    buf[i + 5] !== 47 || buf[i + 6] !== 49 || buf[i + 7] !== 46 || (buf[i + 8] !== 48 && buf[i + 8] !== 49) ||
    buf[i + 9] !== CR
  ) return OTHER;
  const minor = buf[i + 8] === 49 ? 1 : 0;
  const fieldsAt = i + 11;
  // The fields: a token name, a colon, the value up to CRLF. Only Host, If-None-Match and Connection are decoded.
  const head = decoder.decode(buf.subarray(0, blank - 2));
  let host: string | undefined;
  let hosts = 0;
  let ifNoneMatch: string | null = null;
  let close = false;
  let keepAliveAsked = false;
  for (i = fieldsAt; i < blank;) {
    const nameAt = i;
    while (buf[i] < 128 && TCHAR[buf[i]] === 1) i++;
    if (i === nameAt || buf[i] !== 58) return OTHER;
    const field = fieldOf(buf, nameAt, i);
    if (field === NOT_PLAIN) return OTHER;
    const valueAt = i + 1;
    while (buf[i] !== CR) i++;
    if (field !== OTHER_FIELD) {
      const value = trimOws(head.slice(valueAt, i));
      if (field === HOST_FIELD) {
        host = value;
        hosts++;
      } else if (field === IF_NONE_MATCH) {
        ifNoneMatch = ifNoneMatch === null ? value : `${ifNoneMatch}, ${value}`;
      } else {
        // One token (what devices and most clients send) is read without splitting.
        const tokens = value.toLowerCase();
        if (tokens === "close") close = true;
        else if (tokens === "keep-alive") keepAliveAsked = true;
        else {
          for (const token of tokens.split(",")) {
            const t = token.trim();
            if (t === "close") close = true;
            else if (t === "keep-alive") keepAliveAsked = true;
          }
        }
      }
    }
    i += 2;
  }
  // One Host, plain: the edge keys answers by Host and target, and both must read the same to Deno.serve.
  if (hosts !== 1 || host === undefined || !HOST.test(host)) return OTHER;
  const keepAlive = minor === 1 ? !close : keepAliveAsked && !close;
  const target = head.slice(targetAt, targetEnd);
  return {
    kind: "plain",
    request: new PlainRequest(method, target, minor, host, ifNoneMatch, keepAlive, blank + 2, head, fieldsAt),
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

/** What of a request decides the shape of its response: the method, the HTTP version and whether it keeps alive. */
export type ResponseKind = Pick<PlainRequest, "method" | "minor" | "keepAlive">;

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
export function responseBytes(request: ResponseKind, answer: Answer, date: Uint8Array): Uint8Array {
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

function build(request: ResponseKind, answer: Answer, date: Uint8Array): Uint8Array {
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
