/**
 * Admin routes need a key: with `server.admin_token` every admin route refuses a request without it (401, with a
 * Basic challenge), takes it as Bearer or as a Basic password, and never logs it; without a token only loopback
 * and `server.admin_from` may; ten failures in a minute get 429; a trusted proxy's forwarded address is judged.
 * Guessing is bounded for clients that rotate addresses: 30 wrong tokens a minute per IPv4 /24 or IPv6 /64 (all of
 * loopback counting as one network), 100 a minute from all non-loopback clients together; the refusal log is bounded
 * too, and so is the memory behind all of it.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { createApp } from "../../src/app.ts";
import {
  AdminAccess,
  FAILURE_WINDOW_MS,
  MAX_GLOBAL_FAILURES,
  MAX_LOGGED_REFUSALS,
  MAX_NETWORK_FAILURES,
  MAX_TRACKED_ADDRESSES,
  networkOf,
  presentedToken,
} from "../../src/fleet/access.ts";
import { CidrSet, clientAddress, inCidr, isLoopback, parseAddress, parseCidr } from "../../src/fleet/net.ts";
import { memoryLogger } from "../../src/log.ts";
import { tempDir, testConfig } from "../helpers.ts";
import { lanAddress, serve } from "./tools.ts";

const TOKEN = "s3cret-Admin-Token-9f8e7d";
const ADMIN_PATHS = [
  "/",
  "/_/installs",
  "/_/devices",
  "/_/packages/hello",
  "/_/requests",
  "/_/nothing",
  "/metrics",
  "/echo",
];
const from = (hostname: string) => ({ remoteAddr: { hostname, port: 4000 } });
const basic = (user: string, password: string) => `Basic ${btoa(`${user}:${password}`)}`;

async function app(server: Record<string, unknown>, now = () => Date.now()) {
  const logger = memoryLogger();
  const config = testConfig({ cache: { dir: tempDir() }, server });
  const a = await createApp({ config, logger, now });
  return {
    logger,
    get: (path: string, client: string, headers: Record<string, string> = {}) =>
      a.handler(new Request(`http://gw${path}`, { headers }), from(client)),
  };
}

Deno.test("addresses and CIDR ranges, IPv4 and IPv6", () => {
  assert.ok(inCidr(parseCidr("10.0.0.0/8"), "10.200.3.4"));
  assert.ok(!inCidr(parseCidr("10.0.0.0/8"), "11.0.0.1"));
  assert.ok(inCidr(parseCidr("192.168.1.5"), "192.168.1.5"));
  assert.ok(!inCidr(parseCidr("192.168.1.5"), "192.168.1.6"));
  assert.ok(inCidr(parseCidr("fd00::/8"), "fd12:3456::1"));
  assert.ok(inCidr(parseCidr("10.0.0.0/8"), "::ffff:10.1.2.3"), "IPv4-mapped IPv6 reads as IPv4");
  assert.ok(inCidr(parseCidr("0.0.0.0/0"), "8.8.8.8"));
  assert.deepEqual(parseAddress("1:2:3:4:5:6:1.2.3.4")?.family, 6);
  assert.equal(parseAddress("1:2:3"), undefined);
  assert.equal(parseAddress("256.1.1.1"), undefined);
  assert.throws(() => parseCidr("10.0.0.0/33"), /Invalid prefix/);
  assert.throws(() => parseCidr("example.com"), /Invalid address/);
  for (const a of ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"]) assert.ok(isLoopback(a), a);
  for (const a of ["10.0.0.1", "::2", "unknown", "fe80::1"]) assert.ok(!isLoopback(a), a);
  const trusted = new CidrSet(["127.0.0.1", "10.9.0.0/16"]);
  assert.equal(clientAddress("127.0.0.1", "192.168.7.7", trusted), "192.168.7.7");
  assert.equal(clientAddress("127.0.0.1", "6.6.6.6, 192.168.7.7, 10.9.1.1", trusted), "192.168.7.7");
  assert.equal(clientAddress("192.168.7.7", "127.0.0.1", trusted), "192.168.7.7", "untrusted senders are not believed");
  assert.equal(clientAddress("127.0.0.1", "not-an-address", trusted), "127.0.0.1");
  assert.equal(clientAddress("127.0.0.1", null, trusted), "127.0.0.1");
});

Deno.test("Authorization headers: Bearer, Basic with the token as password, nothing else", () => {
  assert.equal(presentedToken(`Bearer ${TOKEN}`), TOKEN);
  assert.equal(presentedToken(basic("admin", TOKEN)), TOKEN);
  assert.equal(presentedToken(basic("", "a:b")), "a:b");
  assert.equal(presentedToken("Digest x"), undefined);
  assert.equal(presentedToken("Basic !!!"), undefined);
  assert.equal(presentedToken(null), undefined);
});

Deno.test("with a token, every admin route refuses without it, from loopback too; device routes and /healthz stay open", async () => {
  const a = await app({ admin_token: TOKEN });
  // Each path from its own loopback address, so that the failures stay below the rate limit.
  for (const [i, path] of ADMIN_PATHS.entries()) {
    const tries: Record<string, string>[] = [{}, { authorization: "Bearer guess-7731" }, {
      authorization: basic("admin", "guess-7731"),
    }];
    for (const headers of tries) {
      const res = await a.get(path, `127.0.0.${i + 1}`, headers);
      assert.equal(res.status, 401, `${path} ${JSON.stringify(headers)}`);
      assert.equal(res.headers.get("www-authenticate"), 'Basic realm="mipserver"');
      await res.body?.cancel();
    }
  }
  for (const path of ["/", "/_/installs", "/metrics", "/echo", "/_/requests"]) {
    for (const auth of [`Bearer ${TOKEN}`, basic("anyone", TOKEN)]) {
      const res = await a.get(path, "10.20.30.40", { authorization: auth });
      assert.equal(res.status, 200, `${path} with ${auth.split(" ")[0]}`);
      await res.body?.cancel();
    }
  }
  for (const path of ["/healthz", "/index.json"]) {
    const res = await a.get(path, "10.20.30.40");
    assert.notEqual(res.status, 401, path);
    await res.body?.cancel();
  }
  const logged = a.logger.lines.join("\n");
  assert.ok(!logged.includes(TOKEN), "the token is in the log");
  assert.ok(!logged.includes("guess-7731"), "a presented value is in the log");
  assert.match(logged, /Admin access refused/);
});

Deno.test("without a token: loopback and admin_from only; a trusted proxy's forwarded client is the one judged", async () => {
  const a = await app({ admin_from: ["192.168.50.0/24"], trusted_proxies: ["127.0.0.1"] });
  const status = async (path: string, client: string, headers: Record<string, string> = {}) => {
    const res = await a.get(path, client, headers);
    await res.body?.cancel();
    return res.status;
  };
  for (const [i, path] of ADMIN_PATHS.filter((p) => p !== "/_/nothing").entries()) {
    assert.equal(await status(path, "127.0.0.1"), 200, path);
    assert.equal(await status(path, "192.168.50.9"), 200, path);
    assert.equal(await status(path, `192.168.51.${i}`), 403, path);
    // An nginx on this host forwards a LAN client: the LAN client is judged, not the proxy's loopback address.
    assert.equal(await status(path, "127.0.0.1", { "x-forwarded-for": `10.1.1.${i}` }), 403, path);
    assert.equal(await status(path, "127.0.0.1", { "x-forwarded-for": "192.168.50.7" }), 200, path);
    // A client that is not a trusted proxy cannot claim to be loopback.
    assert.equal(await status(path, `10.1.2.${i}`, { "x-forwarded-for": "127.0.0.1" }), 403, path);
  }
  assert.equal(await status("/healthz", "10.1.1.1"), 200);
});

Deno.test("ten failures from one address within a minute: 429 for a minute, other addresses unaffected", () => {
  let t = 1_000_000;
  const logger = memoryLogger();
  const access = new AdminAccess({ token: TOKEN, from: [], logger, now: () => t });
  const req = (auth?: string) => new Request("http://gw/metrics", { headers: auth ? { authorization: auth } : {} });
  for (let i = 0; i < 10; i++) assert.equal(access.check(req("Bearer nope"), "10.0.0.66")?.status, 401);
  assert.equal(access.check(req(`Bearer ${TOKEN}`), "10.0.0.66")?.status, 429, "even the right token waits");
  assert.equal(access.check(req(`Bearer ${TOKEN}`), "10.0.0.67"), undefined);
  t += 59_000;
  assert.equal(access.check(req(`Bearer ${TOKEN}`), "10.0.0.66")?.status, 429);
  t += 2_000;
  assert.equal(access.check(req(`Bearer ${TOKEN}`), "10.0.0.66"), undefined);
  // Failures spread over more than a minute do not add up.
  for (let i = 0; i < 9; i++) access.check(req("Bearer nope"), "10.0.0.68");
  t += 61_000;
  assert.equal(access.check(req("Bearer nope"), "10.0.0.68")?.status, 401);
  assert.ok(!logger.lines.join("\n").includes("nope"));
});

Deno.test("over the network with edge threads: a key is needed every time, the edge never repeats an admin answer", async () => {
  const server = await serve({ cache: { dir: tempDir() }, server: { admin_token: TOKEN } });
  try {
    const base = `http://127.0.0.1:${server.port}`;
    const lan = `http://${lanAddress()}:${server.port}`;
    for (const path of ADMIN_PATHS) {
      for (const origin of [base, lan]) {
        const ok = await fetch(`${origin}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } });
        await ok.body?.cancel();
        assert.notEqual(ok.status, 401, `${origin}${path} with the token`);
        // Right after an authorised answer, the same request without the key is refused again.
        const again = await fetch(`${origin}${path}`);
        assert.equal(again.status, 401, `${origin}${path} without the token`);
        assert.equal(again.headers.get("www-authenticate"), 'Basic realm="mipserver"');
        await again.body?.cancel();
      }
    }
    const health = await (await fetch(`${lan}/healthz`)).json();
    assert.equal(health.status, "ok");
    assert.ok(!JSON.stringify(health).includes("/tmp"), "no paths in /healthz");
    assert.ok(!server.lines.join("\n").includes(TOKEN), "the token is in the log");
  } finally {
    await server.stop();
  }
});

Deno.test("admin actions of other issues sit behind the same key: POST /_/refresh needs it, from loopback too", async () => {
  const config = testConfig({ cache: { dir: tempDir() }, server: { admin_token: TOKEN } });
  const a = await createApp({ config, logger: memoryLogger() });
  const post = (headers: Record<string, string> = {}) =>
    a.handler(
      new Request("http://gw/_/refresh/github/acme/sensorkit/v1.0", { method: "POST", headers }),
      from("127.0.0.1"),
    );
  const refused = await post();
  assert.equal(refused.status, 401, await refused.text());
  const allowed = await post({ authorization: `Bearer ${TOKEN}` });
  assert.equal(allowed.status, 200, await allowed.clone().text());
  assert.deepEqual(await allowed.json(), { host: "github", owner: "acme", repo: "sensorkit", ref: "v1.0", expired: 0 });
});

Deno.test("a percent-encoded admin path (/%5F/...) needs the key like /_/...: the router decodes it to the same route", async () => {
  const withToken = await app({ admin_token: TOKEN });
  for (const path of ["/%5F/packages/hello", "/%5f/packages/hello"]) {
    const res = await withToken.get(path, "127.0.0.1");
    assert.equal(res.status, 401, `${path}: ${await res.text()}`);
  }
  // Static admin routes match the path as sent only: an encoded one is simply not found.
  assert.equal((await withToken.get("/%5F/installs", "127.0.0.1")).status, 404);
  const post = (headers: Record<string, string> = {}) => {
    const config = testConfig({ cache: { dir: tempDir() }, server: { admin_token: TOKEN } });
    return createApp({ config, logger: memoryLogger() }).then((a) =>
      a.handler(new Request("http://gw/%5F/refresh/github/o/r/main", { method: "POST", headers }), from("127.0.0.1"))
    );
  };
  assert.equal((await post()).status, 401);
  assert.equal((await post({ authorization: `Bearer ${TOKEN}` })).status, 200);
  // Without a token, only loopback (and admin_from) may: a LAN client gets 403 on the encoded path too.
  const open = await app({});
  const res = await open.get("/%5F/packages/hello", "192.0.2.50");
  assert.equal(res.status, 403, await res.text());
});

const requests = new Map<string | undefined, Request>();
/** An admin request carrying `auth` as its Authorization header (none when undefined); made once per `auth`. */
const adminRequest = (auth?: string) => {
  let request = requests.get(auth);
  if (!request) {
    request = new Request("http://gw/metrics", { headers: auth === undefined ? {} : { authorization: auth } });
    requests.set(auth, request);
  }
  return request;
};

/** An AdminAccess (with a token unless told otherwise) on a clock the test moves; `status` answers 200 when let in. */
function clocked(token: string | null = TOKEN) {
  const clock = { t: 5_000_000 };
  const logger = memoryLogger();
  const access = new AdminAccess({ token, from: [], logger, now: () => clock.t });
  const status = (client: string, auth?: string, inProcess = false) =>
    access.check(adminRequest(auth), client, inProcess)?.status ?? 200;
  return { clock, logger, access, status };
}

Deno.test("networks: IPv4 /24, IPv6 /64, mapped IPv4 as IPv4, all of loopback as one", () => {
  assert.equal(networkOf("10.1.2.3"), "10.1.2.0/24");
  assert.equal(networkOf("::ffff:10.1.2.99"), "10.1.2.0/24");
  assert.equal(networkOf("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
  assert.equal(networkOf("2001:db8:1:2::ffff"), "2001:db8:1:2::/64");
  assert.equal(networkOf("fe80::1"), "fe80:0:0:0::/64");
  for (const a of ["127.0.0.1", "127.3.200.9", "::1", "::ffff:127.9.9.9"]) assert.equal(networkOf(a), "loopback", a);
  assert.equal(networkOf("unknown", true), "loopback", "in-process calls count as loopback");
});

Deno.test("rotating addresses within one /24 or /64: 30 wrong tokens a minute, then 429 for the network, the right token too", () => {
  const { clock, access, status } = clocked();
  // One wrong token from each of 30 addresses: no address comes near its own limit of 10.
  for (let i = 1; i <= MAX_NETWORK_FAILURES; i++) assert.equal(status(`10.1.2.${i}`, "Bearer guess"), 401, `${i}`);
  assert.equal(status("10.1.2.200", `Bearer ${TOKEN}`), 429, "the right token from the blocked /24");
  assert.equal(status("::ffff:10.1.2.201", `Bearer ${TOKEN}`), 429, "IPv4-mapped IPv6 is the same /24");
  assert.equal(status("10.1.3.1", `Bearer ${TOKEN}`), 200, "the next /24 is not blocked");
  for (let i = 1; i <= MAX_NETWORK_FAILURES; i++) {
    assert.equal(status(`2001:db8:1:2::${i.toString(16)}`, basic("admin", "guess")), 401, `${i}`);
  }
  assert.equal(status("2001:db8:1:2:ffff:ffff:ffff:ffff", `Bearer ${TOKEN}`), 429, "the right token from the /64");
  assert.equal(status("2001:db8:1:3::1", `Bearer ${TOKEN}`), 200, "the next /64 is not blocked");
  // Retry-After counts down to the end of the block (90 wrong tokens so far: below the global budget).
  for (let i = 1; i <= MAX_NETWORK_FAILURES; i++) status(`10.7.7.${i}`, "Bearer guess");
  clock.t += 20_000;
  const blocked = access.check(adminRequest(`Bearer ${TOKEN}`), "10.7.7.99");
  assert.equal(blocked?.status, 429);
  assert.equal(blocked?.headers.get("retry-after"), "40");
  // A minute after the block began, the network is let in again.
  clock.t += FAILURE_WINDOW_MS - 20_000 + 1;
  assert.equal(status("10.1.2.200", `Bearer ${TOKEN}`), 200);
  assert.equal(status("2001:db8:1:2::77", `Bearer ${TOKEN}`), 200);
  // Wrong tokens spread over more than a minute do not add up.
  for (let i = 1; i < MAX_NETWORK_FAILURES; i++) assert.equal(status(`10.1.4.${i}`, "Bearer guess"), 401);
  clock.t += FAILURE_WINDOW_MS + 1;
  assert.equal(status("10.1.4.100", "Bearer guess"), 401);
  assert.equal(status("10.1.4.101", `Bearer ${TOKEN}`), 200);
});

Deno.test("requests without credentials guess nothing: they count toward their address only, not their network", () => {
  const { status } = clocked();
  for (let i = 1; i <= 200; i++) assert.equal(status(`10.2.2.${i}`), 401);
  assert.equal(status("10.2.2.250", `Bearer ${TOKEN}`), 200);
});

Deno.test("rotating networks: 100 wrong tokens a minute from everywhere, then every non-loopback client gets 429, loopback still comes in", () => {
  const { clock, logger, access, status } = clocked();
  // Half from IPv4 /24s, half from IPv6 /64s, each network far below its own limit.
  for (let i = 0; i < MAX_GLOBAL_FAILURES; i++) {
    const client = i % 2 ? `10.${i}.0.1` : `2001:db8:${i.toString(16)}::1`;
    assert.equal(status(client, "Bearer guess"), 401, client);
  }
  for (const client of ["192.0.2.1", "2001:db8:ffff::1", "::ffff:198.51.100.7"]) {
    const res = access.check(adminRequest(`Bearer ${TOKEN}`), client);
    assert.equal(res?.status, 429, `${client}: the right token is not even compared`);
    assert.equal(res?.headers.get("retry-after"), "60");
  }
  assert.equal(status("192.0.2.2", "Bearer guess"), 429);
  for (const client of ["127.0.0.1", "127.9.8.7", "::1"]) assert.equal(status(client, `Bearer ${TOKEN}`), 200, client);
  assert.equal(status("unknown", `Bearer ${TOKEN}`, true), 200, "in-process");
  assert.equal(status("127.0.0.1", "Bearer guess"), 401, "loopback keeps its own budget");
  const blocks = logger.lines.filter((l) => l.includes("for every client but loopback"));
  assert.equal(blocks.length, 1, "one line for the block, not one per refusal");
  clock.t += FAILURE_WINDOW_MS + 1;
  assert.equal(status("192.0.2.1", `Bearer ${TOKEN}`), 200, "a minute later");
  // The budget starts again: 99 more wrong tokens are answered 401, the 100th blocks.
  for (let i = 0; i < MAX_GLOBAL_FAILURES - 1; i++) assert.equal(status(`172.16.${i}.1`, "Bearer guess"), 401);
  assert.equal(status("172.17.0.1", "Bearer guess"), 401);
  assert.equal(status("172.17.1.1", `Bearer ${TOKEN}`), 429);
});

Deno.test("loopback is one network: rotating through 127.0.0.0/8 gets 30 wrong tokens a minute, and LAN clients are not blocked by it", () => {
  const { status } = clocked();
  for (let i = 0; i < MAX_NETWORK_FAILURES; i++) assert.equal(status(`127.${i + 1}.${i}.9`, "Bearer guess"), 401);
  for (const client of ["127.0.0.1", "127.200.1.1", "::1"]) {
    assert.equal(status(client, `Bearer ${TOKEN}`), 429, client);
  }
  assert.equal(status("unknown", `Bearer ${TOKEN}`, true), 429, "in-process");
  assert.equal(status("10.0.0.1", `Bearer ${TOKEN}`), 200, "loopback's wrong tokens do not count toward everyone's");
});

Deno.test("memory stays bounded: 100,000 addresses across 127.0.0.0/8 and IPv6 (30,000 without a token), and 30,000 guesses from new networks", () => {
  for (const token of [TOKEN, null]) {
    const { clock, access, status } = clocked(token);
    // Without credentials (or without a token, from addresses not allowed): each address fails once.
    for (let i = 0; i < (token ? 100_000 : 30_000); i++) {
      // Without a token loopback is let in and not counted; the IPv4 half comes from 10.0.0.0/8 then.
      const v4 = `${token ? 127 : 10}.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
      const client = i % 2 ? v4 : `2001:db8:${i.toString(16)}::1`;
      status(client);
      assert.ok(access.tracked.addresses <= MAX_TRACKED_ADDRESSES);
    }
    assert.ok(access.tracked.addresses >= MAX_TRACKED_ADDRESSES / 2, "the newest half at least is kept");
    // The newest addresses are still counted: ten failures block one.
    for (let i = 0; i < 9; i++) status("2001:db8:ffff::1");
    assert.equal(status("2001:db8:ffff::1"), token ? 401 : 403);
    assert.equal(status("2001:db8:ffff::1"), 429);
    // Wrong tokens from a new network each, over ten simulated minutes: the global budget lets at most 100 a minute
    // be counted, and networks are forgotten a minute or two after their last one.
    for (let i = 0; i < 30_000; i++) {
      clock.t += 20;
      status(i % 2 ? `10.${(i >> 8) & 255}.${i & 255}.1` : `2001:db8:${i.toString(16)}:1::1`, "Bearer guess");
      assert.ok(access.tracked.networks <= 3 * MAX_GLOBAL_FAILURES, `${access.tracked.networks} networks`);
    }
    // The flood of addresses minutes ago is forgotten; with a token, only counted wrong tokens added addresses since.
    assert.ok(access.tracked.addresses <= (token ? 3 * MAX_GLOBAL_FAILURES : MAX_TRACKED_ADDRESSES));
  }
});

Deno.test("a flood of refusals is logged in 20 lines a minute and one line counting the rest", () => {
  for (const token of [TOKEN, null]) {
    const { clock, logger, status } = clocked(token);
    // Without a token loopback is let in; the flood comes from the LAN then.
    const net = token ? 127 : 10;
    for (let i = 0; i < 3_000; i++) {
      status(`${net}.3.${Math.floor(i / 250)}.${(i % 250) + 1}`, token ? "Bearer guess" : undefined);
    }
    const refused = logger.lines.filter((l) => l.includes("Admin access refused"));
    assert.equal(refused.length, MAX_LOGGED_REFUSALS, `${refused.length} lines`);
    assert.ok(logger.lines.length <= MAX_LOGGED_REFUSALS + 2, logger.lines.join("\n"));
    clock.t += FAILURE_WINDOW_MS;
    status("10.0.0.1", token ? "Bearer guess" : undefined);
    const summary = logger.lines.find((l) => l.includes("not logged one by one"));
    assert.ok(summary, logger.lines.slice(-3).join("\n"));
    const fields = JSON.parse(summary);
    // With a token, 30 wrong tokens block loopback and the rest are answered 429 without being counted.
    const expected = token
      ? { not_logged: MAX_NETWORK_FAILURES - MAX_LOGGED_REFUSALS, answered_429: 3_000 - MAX_NETWORK_FAILURES }
      : { not_logged: 3_000 - MAX_LOGGED_REFUSALS, answered_429: 0 };
    assert.deepEqual({ not_logged: fields.not_logged, answered_429: fields.answered_429 }, expected);
    assert.ok(logger.lines.at(-1)!.includes("Admin access refused"), "the new minute logs again");
    assert.ok(!logger.lines.join("\n").includes("guess"));
  }
});

/** One HTTP/1.0 request to 127.0.0.1:`port` from a socket bound to `source` (any address in 127.0.0.0/8). */
function getFrom(
  source: string,
  port: number,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; retryAfter: string | undefined }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port, localAddress: source });
    const chunks: Uint8Array[] = [];
    socket.on("connect", () => {
      const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join("");
      socket.write(`GET ${path} HTTP/1.0\r\nHost: gw\r\n${lines}\r\n`);
    });
    socket.on("data", (chunk: Uint8Array) => chunks.push(chunk));
    socket.on("error", reject);
    socket.on("close", () => {
      const head = new TextDecoder().decode(Uint8Array.from(chunks.flatMap((c) => [...c]))).split("\r\n\r\n")[0];
      const status = Number(head.split(" ")[1]);
      const retryAfter = /\r\nretry-after:\s*(\S+)/i.exec(head)?.[1];
      if (!status) reject(new Error(`No answer for ${source}: ${JSON.stringify(head)}`));
      else resolve({ status, retryAfter });
    });
  });
}

/** Runs `task` for 0..count-1, `parallel` at a time; answers the results in order. */
async function pool<T>(count: number, parallel: number, task: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(count);
  let next = 0;
  await Promise.all(Array.from({ length: parallel }, async () => {
    while (next < count) {
      const i = next++;
      out[i] = await task(i);
    }
  }));
  return out;
}

const tally = (statuses: number[]) =>
  Object.fromEntries([...new Set(statuses)].map((s) => [s, statuses.filter((x) => x === s).length]));

Deno.test("over TCP from 3,000 source addresses (127.3.0.1 onwards, 12 /24s): 30 wrong tokens get 401, the rest 429, and the right token is refused", async () => {
  const server = await serve({ cache: { dir: tempDir() }, server: { admin_token: TOKEN } });
  try {
    const source = (i: number) => `127.3.${Math.floor(i / 250)}.${(i % 250) + 1}`;
    const answers = await pool(
      3_000,
      16,
      (i) => getFrom(source(i), server.port, "/metrics", { authorization: `Bearer guess-${i}` }),
    );
    assert.deepEqual(tally(answers.map((a) => a.status)), {
      401: MAX_NETWORK_FAILURES,
      429: 3_000 - MAX_NETWORK_FAILURES,
    });
    const limited = answers.find((a) => a.status === 429)!;
    assert.ok(Number(limited.retryAfter) > 0 && Number(limited.retryAfter) <= 60, `Retry-After ${limited.retryAfter}`);
    // The right token, from an address that has not tried yet and from one that has: refused while blocked.
    for (const from of ["127.3.20.1", source(2_999), "127.0.0.1"]) {
      const right = await getFrom(from, server.port, "/metrics", { authorization: `Bearer ${TOKEN}` });
      assert.equal(right.status, 429, from);
    }
    // Device routes are not affected.
    assert.equal((await getFrom("127.3.0.1", server.port, "/healthz")).status, 200);
    const logged = server.lines.join("\n");
    assert.equal(server.lines.filter((l) => l.includes("Admin access refused")).length, MAX_LOGGED_REFUSALS);
    assert.equal(server.lines.filter((l) => l.includes("for a whole network")).length, 1);
    assert.ok(!logged.includes(TOKEN) && !logged.includes("guess-"), "a token is in the log");
  } finally {
    await server.stop();
  }
});

Deno.test("over TCP behind a trusted proxy, forwarded clients rotating through 3,000 /24s and /64s: 100 get 401, then everyone but loopback 429", async () => {
  const server = await serve(
    { cache: { dir: tempDir() }, server: { admin_token: TOKEN, trusted_proxies: ["127.0.0.1"] } },
    "127.0.0.1",
  );
  try {
    const forwarded = (i: number) => i % 2 ? `10.${i >> 8}.${i & 255}.9` : `2001:db8:${i.toString(16)}::9`;
    const get = (client: string | undefined, token: string) =>
      fetch(`${server.base}/metrics`, {
        headers: { authorization: `Bearer ${token}`, ...(client ? { "x-forwarded-for": client } : {}) },
      }).then(async (res) => {
        await res.body?.cancel();
        return res.status;
      });
    const statuses = await pool(3_000, 8, (i) => get(forwarded(i), `guess-${i}`));
    assert.deepEqual(tally(statuses), { 401: MAX_GLOBAL_FAILURES, 429: 3_000 - MAX_GLOBAL_FAILURES });
    assert.equal(await get("192.0.2.77", TOKEN), 429, "the right token from a fresh LAN address");
    assert.equal(await get(undefined, TOKEN), 200, "the right token from the machine itself");
  } finally {
    await server.stop();
  }
});
