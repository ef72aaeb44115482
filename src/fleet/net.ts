/**
 * Client addresses: CIDR ranges, loopback, and the client behind a trusted reverse proxy (`X-Forwarded-For`).
 * @module
 */

/** A parsed address range. */
export interface Cidr {
  /** 4 for IPv4, 6 for IPv6. */
  family: 4 | 6;
  bits: bigint;
  prefix: number;
}

function parseV4(text: string): bigint | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let out = 0n;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) return undefined;
    out = (out << 8n) | BigInt(Number(p));
  }
  return out;
}

function parseV6(text: string): bigint | undefined {
  let s = text.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
  const v4 = /(?:^|:)(\d{1,3}(?:\.\d{1,3}){3})$/.exec(s);
  if (v4) {
    // A trailing dotted quad is two 16-bit groups.
    const n = parseV4(v4[1]);
    if (n === undefined) return undefined;
    s = `${s.slice(0, s.length - v4[1].length)}${(n >> 16n).toString(16)}:${(n & 0xffffn).toString(16)}`;
  }
  const halves = s.split("::");
  if (halves.length > 2) return undefined;
  const read = (h: string) => (h === "" ? [] : h.split(":"));
  const head = read(halves[0]);
  const rest = halves.length === 2 ? read(halves[1]) : [];
  const groups = [...head, ...rest];
  if (!groups.every((g) => /^[0-9a-fA-F]{1,4}$/.test(g))) return undefined;
  if (halves.length === 1 ? groups.length !== 8 : groups.length > 7) return undefined;
  const words = [...head, ...Array(8 - groups.length).fill("0"), ...rest].map((g) => BigInt(parseInt(g, 16)));
  return words.reduce((acc, w) => (acc << 16n) | w, 0n);
}

/** Parses an address into family and bits; IPv4-mapped IPv6 (`::ffff:10.0.0.1`) reads as IPv4. */
export function parseAddress(text: string): { family: 4 | 6; bits: bigint } | undefined {
  const t = text.trim();
  const v4 = parseV4(t);
  if (v4 !== undefined) return { family: 4, bits: v4 };
  if (!t.includes(":")) return undefined;
  const v6 = parseV6(t);
  if (v6 === undefined) return undefined;
  if (v6 >> 32n === 0xffffn) return { family: 4, bits: v6 & 0xffffffffn };
  return { family: 6, bits: v6 };
}

/** Parses `10.0.0.0/8`, `192.168.1.5`, `fd00::/8`; throws on anything else. */
export function parseCidr(text: string): Cidr {
  const [addr, len, extra] = text.trim().split("/");
  const parsed = extra === undefined ? parseAddress(addr) : undefined;
  if (!parsed) throw new Error(`Invalid address range ${JSON.stringify(text)}`);
  const max = parsed.family === 4 ? 32 : 128;
  const prefix = len === undefined ? max : /^\d{1,3}$/.test(len) ? Number(len) : NaN;
  if (!(prefix >= 0 && prefix <= max)) throw new Error(`Invalid prefix length in ${JSON.stringify(text)}`);
  return { family: parsed.family, bits: parsed.bits, prefix };
}

/** Tells whether `address` lies in `cidr`. */
export function inCidr(cidr: Cidr, address: string): boolean {
  const a = parseAddress(address);
  if (!a || a.family !== cidr.family) return false;
  const width = BigInt(cidr.family === 4 ? 32 : 128);
  const shift = width - BigInt(cidr.prefix);
  return a.bits >> shift === cidr.bits >> shift;
}

/** A set of ranges, with a small memory of recent answers (addresses repeat). */
export class CidrSet {
  #ranges: Cidr[];
  #memo = new Map<string, boolean>();

  constructor(ranges: string[]) {
    this.#ranges = ranges.map(parseCidr);
  }

  /** How many ranges the set holds. */
  get size(): number {
    return this.#ranges.length;
  }

  /** Tells whether `address` lies in any range. */
  has(address: string): boolean {
    if (this.#ranges.length === 0) return false;
    let hit = this.#memo.get(address);
    if (hit === undefined) {
      hit = this.#ranges.some((r) => inCidr(r, address));
      if (this.#memo.size >= 4096) this.#memo.clear();
      this.#memo.set(address, hit);
    }
    return hit;
  }
}

const LOOPBACK = new CidrSet(["127.0.0.0/8", "::1/128"]);

/** Tells whether `address` is a loopback address (127.0.0.0/8, ::1, or IPv4-mapped loopback). */
export function isLoopback(address: string): boolean {
  return LOOPBACK.has(address);
}

/**
 * The client a request stands for: the connection's address, or, when that is a trusted proxy, the last address in
 * `X-Forwarded-For` that is not itself a trusted proxy (so a client cannot forge its way past the proxy).
 */
export function clientAddress(socket: string, forwardedFor: string | null, trusted: CidrSet): string {
  if (forwardedFor === null || !trusted.has(socket)) return socket;
  const hops = forwardedFor.split(",").map((h) => h.trim()).filter(Boolean);
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i];
    if (!parseAddress(hop)) return socket;
    if (!trusted.has(hop) || i === 0) return hop;
  }
  return socket;
}
