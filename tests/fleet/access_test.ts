/**
 * Admin routes need a key: with `server.admin_token` every admin route refuses a request without it (401, with a
 * Basic challenge), takes it as Bearer or as a Basic password, and never logs it; without a token only loopback
 * and `server.admin_from` may; ten failures in a minute get 429; a trusted proxy's forwarded address is judged.
 */
import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { AdminAccess, presentedToken } from "../../src/fleet/access.ts";
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
