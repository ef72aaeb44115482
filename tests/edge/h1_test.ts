import assert from "node:assert/strict";
import { type Answer, dateLine, encodeFields, type PlainRequest, readHead, responseBytes } from "../../src/edge/h1.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function read(text: string, maxHead?: number) {
  const bytes = enc.encode(text);
  return readHead(bytes, bytes.length, maxHead);
}

function plain(text: string): PlainRequest {
  const result = read(text);
  assert.equal(result.kind, "plain", JSON.stringify(text));
  return (result as { request: PlainRequest }).request;
}

Deno.test("readHead reads a device's HTTP/1.0 GET: method, target, Host, closes after", () => {
  const text = "GET /file/ab/abcdef12 HTTP/1.0\r\nHost: gw.lan\r\nUser-Agent:  mip \r\n\r\n";
  const request = plain(text);
  assert.equal(request.method, "GET");
  assert.equal(request.target, "/file/ab/abcdef12");
  assert.equal(request.minor, 0);
  assert.equal(request.host, "gw.lan");
  assert.deepEqual(request.headers, [["host", "gw.lan"], ["user-agent", "mip"]]);
  assert.equal(request.keepAlive, false);
  assert.equal(request.length, text.length);
  assert.equal(request.ifNoneMatch, null);
});

Deno.test("PlainRequest.peer: another mipserver asked (User-Agent mipserver...), read from the head only then", () => {
  const head = (fields: string) => plain(`GET /index.json HTTP/1.1\r\nHost: gw\r\n${fields}\r\n`);
  assert.equal(head("User-Agent: mipserver\r\n").peer, true);
  assert.equal(head("user-agent:  mipserver/1.4 \r\n").peer, true);
  assert.equal(head("").peer, false);
  assert.equal(head("User-Agent: mip\r\n").peer, false);
  assert.equal(head("User-Agent: curl\r\nX-Note: mipserver\r\n").peer, false, "the word elsewhere is not enough");
  assert.equal(
    plain("GET / HTTP/1.1\r\nHost: mipserver.lan\r\nUser-Agent: mip\r\n\r\n").peer,
    false,
    "a host of that name is no peer",
  );
});

Deno.test("readHead: keep-alive follows the version and the Connection header", () => {
  const cases: [string, string, boolean][] = [
    ["1.1", "", true],
    ["1.1", "Connection: close\r\n", false],
    ["1.1", "Connection: Keep-Alive, Close\r\n", false],
    ["1.0", "", false],
    ["1.0", "Connection: keep-alive\r\n", true],
    ["1.0", "connection: foo, KEEP-ALIVE\r\n", true],
  ];
  for (const [version, field, keepAlive] of cases) {
    const request = plain(`HEAD /index.json HTTP/${version}\r\nHost: a\r\n${field}\r\n`);
    assert.equal(request.keepAlive, keepAlive, `${version} ${field}`);
    assert.equal(request.method, "HEAD");
  }
});

Deno.test("readHead joins repeated If-None-Match fields and stops at the first head of pipelined ones", () => {
  const first = 'GET /a?x=1 HTTP/1.1\r\nHost: a\r\nIf-None-Match: "x"\r\nif-none-match: W/"y"\r\n\r\n';
  const request = plain(`${first}GET /b HTTP/1.1\r\nHost: a\r\n\r\n`);
  assert.equal(request.ifNoneMatch, '"x", W/"y"');
  assert.equal(request.target, "/a?x=1");
  assert.equal(request.length, first.length);
});

Deno.test("readHead waits for the rest of a head that has not all arrived", () => {
  for (
    const text of [
      "",
      "GET / HTTP/1.1",
      "GET / HTTP/1.1\r",
      "GET / HTTP/1.1\r\nHost: a\r\n",
      "GET / HTTP/1.1\r\nHost: a\r\n\r",
    ]
  ) {
    assert.equal(read(text).kind, "incomplete", JSON.stringify(text));
  }
});

Deno.test("readHead leaves everything but plain requests to Deno.serve", () => {
  const h = "Host: a\r\n";
  const others = [
    `POST / HTTP/1.1\r\n${h}\r\n`,
    `get / HTTP/1.1\r\n${h}\r\n`,
    `OPTIONS * HTTP/1.1\r\n${h}\r\n`,
    `GET http://a/ HTTP/1.1\r\n${h}\r\n`,
    `GET / HTTP/2.0\r\n${h}\r\n`,
    `GET / HTTP/1.1 \r\n${h}\r\n`,
    `GET  / HTTP/1.1\r\n${h}\r\n`,
    `GET /a#b HTTP/1.1\r\n${h}\r\n`,
    `GET / HTTP/1.1\r\n\r\n`,
    `GET / HTTP/1.1\r\n${h}${h}\r\n`,
    `GET / HTTP/1.1\r\n${h}Content-Length: 0\r\n\r\n`,
    `GET / HTTP/1.1\r\n${h}Transfer-Encoding: chunked\r\n\r\n`,
    `GET / HTTP/1.1\r\n${h}Expect: 100-continue\r\n\r\n`,
    `GET / HTTP/1.1\r\n${h}Upgrade: websocket\r\n\r\n`,
    `GET / HTTP/1.1\r\n${h}X-A: 1\r\n  folded\r\n\r\n`,
    `GET / HTTP/1.1\r\n${h}Bad Name: 1\r\n\r\n`,
    `GET / HTTP/1.1\r\n${h}: empty name\r\n\r\n`,
    `GET / HTTP/1.1\r\nHost: a b\r\n\r\n`,
    `GET / HTTP/1.1\r\nHost: a/b\r\n\r\n`,
    `GET / HTTP/1.1\r\nHost: \r\n\r\n`,
    `\r\nGET / HTTP/1.1\r\n${h}\r\n`,
    // Bare LF, a lone CR, control bytes, UTF-8: refused on sight, before the head is complete.
    `GET / HTTP/1.1\n${h}`,
    `GET / HTTP/1.1\rX`,
    `GET / HTTP/1.1\r\nX-A: \x01`,
    `GET /caf\u00e9 HTTP/1.1\r\n`,
  ];
  for (const text of others) assert.equal(read(text).kind, "other", JSON.stringify(text));
  // A head longer than the limit, complete or not.
  assert.equal(read(`GET / HTTP/1.1\r\n${h}X-Long: ${"y".repeat(200)}\r\n\r\n`, 128).kind, "other");
  assert.equal(read(`GET / HTTP/1.1\r\n${h}X-Long: ${"y".repeat(200)}`, 128).kind, "other");
  // Hosts that make a valid authority are read here, ports and IPv6 literals included.
  for (const host of ["gw.lan", "GW.lan:18891", "10.0.0.1", "[::1]:18891", "a-b.c"]) {
    assert.equal(plain(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`).host, host);
  }
});

function answer(status: number, fields: [string, string][], body: string | null): Answer {
  const bytes = body === null ? null : enc.encode(body);
  return { status, fields: encodeFields(fields, bytes?.length), body: bytes };
}

Deno.test("responseBytes writes the status line in the request's version, the fields, Date, and the body", () => {
  const date = enc.encode("date: Tue, 24 Nov 2026 13:00:00 GMT\r\n");
  const a = answer(200, [["Content-Type", "application/json"], ["etag", '"e"']], "{}");
  const out = (text: string) => dec.decode(responseBytes(plain(text), a, date));
  assert.equal(
    out("GET / HTTP/1.0\r\nHost: a\r\n\r\n"),
    'HTTP/1.0 200 OK\r\ncontent-type: application/json\r\netag: "e"\r\ncontent-length: 2\r\n' +
      "date: Tue, 24 Nov 2026 13:00:00 GMT\r\n\r\n{}",
  );
  assert.match(
    out("GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"),
    /\r\nconnection: keep-alive\r\n\r\n\{\}$/,
  );
  assert.match(out("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), /^HTTP\/1\.1 200 OK\r\n.*GMT\r\n\r\n\{\}$/s);
  assert.match(out("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"), /\r\nconnection: close\r\n\r\n\{\}$/);
  // HEAD: the GET's Content-Length, no body.
  assert.match(out("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"), /content-length: 2\r\n.*GMT\r\n\r\n$/s);
  // No body for 304 and 204, whatever the answer holds.
  const notModified = { ...answer(304, [["etag", '"e"']], null), body: enc.encode("x") };
  assert.equal(
    dec.decode(responseBytes(plain("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), notModified, date)),
    'HTTP/1.1 304 Not Modified\r\netag: "e"\r\ndate: Tue, 24 Nov 2026 13:00:00 GMT\r\n\r\n',
  );
  assert.match(
    dec.decode(responseBytes(plain("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), answer(599, [], "x"), date)),
    /^HTTP\/1\.1 599 \r\ncontent-length: 1\r\n/,
  );
});

Deno.test("encodeFields keeps a given Content-Length and drops Date, Connection and Transfer-Encoding", () => {
  const fields = dec.decode(encodeFields([
    ["Date", "x"],
    ["connection", "keep-alive"],
    ["transfer-encoding", "chunked"],
    ["content-length", "7"],
    ["x-a", "1"],
  ], 3));
  assert.equal(fields, "content-length: 7\r\nx-a: 1\r\n");
  assert.equal(dec.decode(encodeFields([["x-a", "1"]])), "x-a: 1\r\n");
});

Deno.test("dateLine encodes the Date once per second of the clock it is given", () => {
  let now = Date.UTC(2026, 10, 24, 13, 0, 0, 100);
  const date = dateLine(() => now);
  const first = date();
  assert.equal(dec.decode(first), "date: Tue, 24 Nov 2026 13:00:00 GMT\r\n");
  now += 800;
  assert.equal(date(), first, "re-encoded within the same second");
  now += 200;
  assert.equal(dec.decode(date()), "date: Tue, 24 Nov 2026 13:00:01 GMT\r\n");
});

Deno.test("responseBytes makes a repeated answer's bytes once per kind of request and per Date line", () => {
  const a: Answer = { ...answer(200, [["etag", '"e"']], "body"), repeated: true };
  const second1 = enc.encode("date: Tue, 24 Nov 2026 13:00:00 GMT\r\n");
  const second2 = enc.encode("date: Tue, 24 Nov 2026 13:00:01 GMT\r\n");
  const get11 = plain("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  const first = responseBytes(get11, a, second1);
  assert.equal(responseBytes(get11, a, second1), first, "made again within the same second");
  assert.equal(responseBytes(plain("GET /other HTTP/1.1\r\nHost: b\r\n\r\n"), a, second1), first);
  const head = responseBytes(plain("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n"), a, second1);
  assert.notEqual(head, first);
  assert.ok(!dec.decode(head).endsWith("body"));
  const old = responseBytes(plain("GET / HTTP/1.0\r\nHost: a\r\n\r\n"), a, second1);
  assert.match(dec.decode(old), /^HTTP\/1\.0 200 OK/);
  const next = responseBytes(get11, a, second2);
  assert.notEqual(next, first);
  assert.match(dec.decode(next), /13:00:01 GMT\r\n\r\nbody$/);
  // Answers given once are made each time.
  const once = answer(200, [], "x");
  assert.notEqual(responseBytes(get11, once, second1), responseBytes(get11, once, second1));
});

/** The regular-expression reading of a head that `readHead` replaced, kept as the reference it must agree with. */
function referenceHead(text: string): { kind: string; request?: Record<string, unknown> } {
  const blank = text.indexOf("\r\n\r\n");
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if ((c < 0x20 || c >= 0x7f) && c !== 9 && c !== 13 && c !== 10) return { kind: "other" };
    if (c === 13 && i + 1 < text.length && text[i + 1] !== "\n") return { kind: "other" };
    if (c === 10 && text[i - 1] !== "\r") return { kind: "other" };
    if (blank >= 0 && i > blank) break;
  }
  if (blank < 0) return { kind: "incomplete" };
  const lines = text.slice(0, blank).split("\r\n");
  const first = /^(GET|HEAD) (\/[!-~]*) HTTP\/1\.([01])$/.exec(lines[0]);
  if (!first || first[2].includes("#")) return { kind: "other" };
  const headers: [string, string][] = [];
  let host: string | undefined;
  let hosts = 0;
  let ifNoneMatch: string | null = null;
  let close = false;
  let keepAliveAsked = false;
  for (const line of lines.slice(1)) {
    const field = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*$/.exec(line);
    if (!field) return { kind: "other" };
    const name = field[1].toLowerCase();
    const value = field[2];
    if (["content-length", "transfer-encoding", "expect", "upgrade"].includes(name)) return { kind: "other" };
    headers.push([name, value]);
    if (name === "host") (host = value, hosts++);
    else if (name === "if-none-match") ifNoneMatch = ifNoneMatch === null ? value : `${ifNoneMatch}, ${value}`;
    else if (name === "connection") {
      for (const token of value.toLowerCase().split(",")) {
        if (token.trim() === "close") close = true;
        else if (token.trim() === "keep-alive") keepAliveAsked = true;
      }
    }
  }
  if (hosts !== 1 || !/^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]*)?$/.test(host!)) return { kind: "other" };
  const minor = first[3] === "1" ? 1 : 0;
  return {
    kind: "plain",
    request: {
      method: first[1],
      target: first[2],
      minor,
      host,
      headers,
      ifNoneMatch,
      keepAlive: minor === 1 ? !close : keepAliveAsked && !close,
      length: blank + 4,
    },
  };
}

Deno.test("readHead agrees with the regular-expression reading on 20,000 generated and mutated heads", () => {
  // A small deterministic generator (xorshift), so a failure names a head that can be replayed.
  let seed = 0x9e3779b9;
  const rand = (n: number) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const pick = <T>(items: T[]) => items[rand(items.length)];
  const names = [
    "Host",
    "host",
    "HOST",
    "If-None-Match",
    "if-none-match",
    "Connection",
    "User-Agent",
    "X-A",
    "Hos",
    "Hostx",
    "Content-Length",
    "content-LENGTH",
    "Transfer-Encoding",
    "Expect",
    "Upgrade",
    "Accept",
    "Bad Name",
    "",
    "UPGRADE",
    "Connectio",
    "if-none-matcH",
  ];
  const values = [
    "gw.lan",
    "gw.lan:18891",
    "[::1]:80",
    "a b",
    "",
    " close ",
    "Keep-Alive, close",
    "keep-alive",
    '"e1", W/"e2"',
    "\t x \t",
    "10.0.0.1",
    "a/b",
    "caf\u00e9",
    "x\x01",
  ];
  const targets = ["/", "/file/ab/abcdef12", "/a?x=1", "/a#b", "/%5F/x", "*", "http://a/", "/a b", "/\u00e9", "//"];
  let plain = 0;
  // Mostly a head a device could send, with odd parts drawn now and then.
  const odd = <T>(good: T[], bad: T[]) => (rand(8) === 0 ? pick(bad) : pick(good));
  for (let n = 0; n < 20_000; n++) {
    let text = `${odd(["GET", "HEAD"], ["get", "POST", "GETX", "HEAD "])} ${odd(targets.slice(0, 5), targets)} ${
      odd(["HTTP/1.1", "HTTP/1.0"], ["HTTP/2.0", "HTTP/1.1 ", "http/1.1"])
    }\r\n`;
    const fields = [`${pick(["Host", "host", "HOST"])}: ${odd(values.slice(0, 3), values)}`];
    for (let f = rand(4); f > 0; f--) {
      fields.push(`${odd(names.slice(3, 8), names)}:${pick(["", " ", "  ", "\t"])}${odd(values.slice(5, 11), values)}`);
    }
    fields.sort(() => rand(3) - 1);
    text += fields.map((f) => `${f}\r\n`).join("");
    text += odd(["\r\n"], ["", "\n", "\r\nGET / HTTP/1.1\r\n"]);
    // One time in eight, one byte changed or taken out.
    if (rand(8) === 0 && text.length > 0) {
      const at = rand(text.length);
      const by = rand(2) ? "" : pick(["\r", "\n", " ", ":", "\x00", "A"]);
      text = text.slice(0, at) + by + text.slice(at + 1);
    }
    const got = read(text);
    const want = referenceHead(text);
    assert.equal(got.kind, want.kind, JSON.stringify(text));
    if (got.kind === "plain") {
      plain++;
      const r = (got as { request: PlainRequest }).request;
      const view = {
        method: r.method,
        target: r.target,
        minor: r.minor,
        host: r.host,
        headers: r.headers,
        ifNoneMatch: r.ifNoneMatch,
        keepAlive: r.keepAlive,
        length: r.length,
      };
      assert.deepEqual(view, want.request, JSON.stringify(text));
    }
  }
  // The generator reaches the plain case often enough for the comparison to mean something.
  assert.ok(plain > 5_000, `${plain} plain heads`);
});
