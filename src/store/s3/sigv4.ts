/**
 * AWS Signature Version 4 for S3 requests, on WebCrypto alone: the canonical request, the string to sign, the day's
 * signing key and the `Authorization` header. Kept apart from the client so it is checked against AWS's documented
 * examples on its own.
 * @module
 */

/** The keys a request is signed with. */
export interface Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  /** A temporary session's token, sent as `x-amz-security-token` (and signed). */
  sessionToken?: string;
}

/** One request to sign. */
export interface SigningRequest {
  method: string;
  /** The URL as it is sent: its path segments and query already in the form the server reads. */
  url: URL;
  /** Headers to send and sign besides `host` and the `x-amz-*` ones the signer adds (`range`, `if-none-match`, ...). */
  headers?: Record<string, string>;
  /** The payload's lowercase hex sha256 (or `UNSIGNED-PAYLOAD`); sent as `x-amz-content-sha256`. */
  payloadHash: string;
  /** The signing time (default: now). */
  date?: Date;
}

/** The sha256 of an empty payload. */
export const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const enc = new TextEncoder();

/**
 * `text` percent-encoded the way SigV4 wants it: every byte but the unreserved `A-Za-z0-9-._~` as `%XX` (upper-case),
 * and `/` kept when `keepSlash`.
 */
export function uriEncode(text: string, keepSlash = false): string {
  let out = "";
  for (const byte of enc.encode(text)) {
    const c = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-._~]/.test(c) || (keepSlash && c === "/")) out += c;
    else out += `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** The lowercase hex sha256 of `data`. */
export async function sha256Hex(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === "string" ? enc.encode(data) : data;
  return hex(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
}

function hex(buffer: ArrayBuffer): string {
  let out = "";
  for (const b of new Uint8Array(buffer)) out += b.toString(16).padStart(2, "0");
  return out;
}

async function hmac(key: ArrayBuffer | Uint8Array, text: string): Promise<ArrayBuffer> {
  const k = await crypto.subtle.importKey(
    "raw",
    key as Uint8Array<ArrayBuffer>,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  return crypto.subtle.sign("HMAC", k, enc.encode(text));
}

/** `date` as SigV4's timestamp, `YYYYMMDDTHHMMSSZ`. */
export function amzDate(date: Date): string {
  return date.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

/** The canonical URI: each path segment decoded once and encoded again (S3 does not normalise `.` or `//`). */
export function canonicalUri(url: URL): string {
  const path = url.pathname === "" ? "/" : url.pathname;
  return path.split("/").map((segment) => uriEncode(decodeURIComponent(segment))).join("/");
}

/** The canonical query: every parameter (a bare name has an empty value) encoded, sorted by name and then value. */
export function canonicalQuery(url: URL): string {
  const search = url.search.replace(/^\?/, "");
  if (search === "") return "";
  const pairs = search.split("&").filter((p) => p !== "").map((part) => {
    const i = part.indexOf("=");
    const name = i < 0 ? part : part.slice(0, i);
    const value = i < 0 ? "" : part.slice(i + 1);
    return [uriEncode(decodeURIComponent(name)), uriEncode(decodeURIComponent(value))];
  });
  pairs.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  return pairs.map(([n, v]) => `${n}=${v}`).join("&");
}

/**
 * Signs requests with one set of credentials for one region and service, keeping the day's signing key (derived
 * once a day rather than on every request).
 */
export class SigV4Signer {
  #credentials: Credentials;
  #region: string;
  #service: string;
  #day = "";
  #key?: ArrayBuffer;

  constructor(credentials: Credentials, region: string, service = "s3") {
    this.#credentials = credentials;
    this.#region = region;
    this.#service = service;
  }

  async #signingKey(day: string): Promise<ArrayBuffer> {
    if (this.#day === day && this.#key) return this.#key;
    const kDate = await hmac(enc.encode(`AWS4${this.#credentials.secretAccessKey}`), day);
    const kRegion = await hmac(kDate, this.#region);
    const kService = await hmac(kRegion, this.#service);
    const key = await hmac(kService, "aws4_request");
    this.#day = day;
    this.#key = key;
    return key;
  }

  /**
   * The headers to send with `request`: those it gave, `host`, `x-amz-date`, `x-amz-content-sha256`,
   * `x-amz-security-token` with a session, and `authorization`. Every header returned but `authorization` is signed.
   */
  async sign(request: SigningRequest): Promise<Record<string, string>> {
    const date = request.date ?? new Date();
    const stamp = amzDate(date);
    const day = stamp.slice(0, 8);
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(request.headers ?? {})) headers[name.toLowerCase()] = value;
    headers["host"] = request.url.host;
    headers["x-amz-date"] = stamp;
    headers["x-amz-content-sha256"] = request.payloadHash;
    if (this.#credentials.sessionToken) headers["x-amz-security-token"] = this.#credentials.sessionToken;
    const names = Object.keys(headers).sort();
    const canonicalHeaders = names.map((n) => `${n}:${headers[n].trim().replace(/\s+/g, " ")}\n`).join("");
    const signedHeaders = names.join(";");
    const canonical = [
      request.method.toUpperCase(),
      canonicalUri(request.url),
      canonicalQuery(request.url),
      canonicalHeaders,
      signedHeaders,
      request.payloadHash,
    ].join("\n");
    const scope = `${day}/${this.#region}/${this.#service}/aws4_request`;
    const stringToSign = ["AWS4-HMAC-SHA256", stamp, scope, await sha256Hex(canonical)].join("\n");
    const signature = hex(await hmac(await this.#signingKey(day), stringToSign));
    headers["authorization"] = `AWS4-HMAC-SHA256 Credential=${this.#credentials.accessKeyId}/${scope},` +
      `SignedHeaders=${signedHeaders},Signature=${signature}`;
    return headers;
  }
}
