/**
 * The settings the listener takes from the configuration reach it: `server.head_timeout`, `server.idle_timeout` and
 * `log.requests_kept`, through the production path (`configSettings(config)` into `listen`, as main.ts does), on the
 * main thread alone (`server.workers: 0`, the default) and in edge worker threads (2). How the deadlines behave is
 * tested on the front itself (front_test.ts); here, that the configured values are the ones in force.
 *
 * Each test sets one timeout short (300 ms) and the other long (10 s), so a connection closed at the short one cannot
 * be the long one's doing nor the defaults' (30 s, 60 s), and the connection the short one does not apply to is shown
 * still open well past it. The waits are limits of "not closed yet" and "closed by then", seconds apart from either
 * timeout, not measurements.
 */
import assert from "node:assert/strict";
import { serveApp, type ServedApp } from "../e2e/tools.ts";
import { tempDir } from "../helpers.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A client connection that reads one whole response at a time (Content-Length bodies). */
class Client {
  #buf = new Uint8Array(0);
  private constructor(readonly conn: Deno.TcpConn) {}
  static async open(port: number): Promise<Client> {
    return new Client(await Deno.connect({ hostname: "127.0.0.1", port }));
  }
  async send(text: string): Promise<void> {
    const bytes = enc.encode(text);
    for (let at = 0; at < bytes.length;) at += await this.conn.write(bytes.subarray(at));
  }
  async #more(): Promise<boolean> {
    const chunk = new Uint8Array(65536);
    const n = await this.conn.read(chunk);
    if (n === null) return false;
    const joined = new Uint8Array(this.#buf.length + n);
    joined.set(this.#buf);
    joined.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = joined;
    return true;
  }
  /** The next response's status line and body; undefined when the server closed instead. */
  async response(): Promise<{ status: string; body: string } | undefined> {
    let end: number;
    try {
      while ((end = dec.decode(this.#buf).indexOf("\r\n\r\n")) < 0) if (!(await this.#more())) return undefined;
    } catch (e) {
      if (e instanceof Deno.errors.ConnectionReset || e instanceof Deno.errors.BrokenPipe) return undefined;
      throw e;
    }
    const head = dec.decode(this.#buf.subarray(0, end));
    const length = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? 0);
    while (this.#buf.length < end + 4 + length) if (!(await this.#more())) throw new Error("body cut short");
    const body = dec.decode(this.#buf.subarray(end + 4, end + 4 + length));
    this.#buf = this.#buf.slice(end + 4 + length);
    return { status: head.split("\r\n")[0], body };
  }
  /** Whether the server closes the connection (with nothing more to read) within `ms`. */
  async closedWithin(ms: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    const closed = this.#more().then((more) => !more, () => true);
    const result = await Promise.race([closed, late]);
    clearTimeout(timer);
    return result;
  }
  /** Sends a keep-alive GET /healthz and reads its answer: whether the connection still serves. */
  async serves(): Promise<boolean> {
    try {
      await this.send("GET /healthz HTTP/1.1\r\nHost: gw.lan\r\n\r\n");
    } catch {
      return false;
    }
    const res = await this.response();
    return res !== undefined && / 200 /.test(res.status) && JSON.parse(res.body).status === "ok";
  }
  close(): void {
    try {
      this.conn.close();
    } catch { /* closed */ }
  }
}

/** A server on a fresh cache whose upstreams refuse connections (nothing here needs them), with `settings`. */
function serve(settings: Record<string, unknown>, workers: number): Promise<ServedApp> {
  const dead = "http://127.0.0.1:9";
  return serveApp({
    cache: { dir: tempDir("mipserver-settings-") },
    upstreams: {
      index: `${dead}/pi/v2`,
      github: dead,
      gitlab: dead,
      pypi: `${dead}/pypi`,
      pypi_files: dead,
      retries: 0,
    },
    ...settings,
  }, { workers });
}

for (const workers of [0, 2]) {
  const where = workers === 0 ? "the main thread" : `${workers} edge worker threads`;

  Deno.test(`server.head_timeout from the config (${where}): a silent connection is closed at it, an idle keep-alive one is not`, async () => {
    const { port, stop } = await serve({ server: { head_timeout: "300ms", idle_timeout: "10s" } }, workers);
    const silent = await Client.open(port);
    const idle = await Client.open(port);
    try {
      assert.ok(await idle.serves(), "the keep-alive connection's first request");
      assert.ok(
        await silent.closedWithin(5000),
        "a connection that sent nothing stayed open past a 300 ms head_timeout",
      );
      // Past three head timeouts since its answer, the idle connection (10 s idle_timeout) still serves.
      await sleep(1000);
      assert.ok(await idle.serves(), "an idle keep-alive connection was closed at the head_timeout");
    } finally {
      silent.close();
      idle.close();
      await stop();
    }
  });

  Deno.test(`server.idle_timeout from the config (${where}): an idle keep-alive connection is closed at it, a new one is not`, async () => {
    const { port, stop } = await serve({ server: { head_timeout: "10s", idle_timeout: "300ms" } }, workers);
    const silent = await Client.open(port);
    const idle = await Client.open(port);
    try {
      assert.ok(await idle.serves(), "the keep-alive connection's first request");
      assert.ok(await idle.closedWithin(5000), "an idle keep-alive connection stayed open past a 300 ms idle_timeout");
      // A connection that has not sent its first request is due the head_timeout (10 s), not the idle one.
      await sleep(1000);
      assert.ok(await silent.serves(), "a connection waiting for its first request was closed at the idle_timeout");
    } finally {
      silent.close();
      idle.close();
      await stop();
    }
  });

  Deno.test(`log.requests_kept from the config (${where}): /_/requests keeps the newest 5 of 20`, async () => {
    const { base, stop } = await serve({ log: { requests_kept: 5 } }, workers);
    try {
      const paths = Array.from({ length: 20 }, (_, i) => `/nosuch-${String(i).padStart(2, "0")}`);
      for (const path of paths) {
        const res = await fetch(`${base}${path}`);
        await res.body?.cancel();
        assert.equal(res.status, 404, path);
      }
      const kept = await (await fetch(`${base}/_/requests?limit=1000`)).json();
      assert.deepEqual(kept.requests.map((r: { path: string }) => r.path), paths.slice(15).reverse());
      // Not merely shown 5 (a limit is cut to the ring's size): the older ones are gone, a filter finds none.
      const oldest = await (await fetch(`${base}/_/requests?path=/nosuch-00`)).json();
      assert.equal(oldest.count, 0, JSON.stringify(oldest));
      const newest = await (await fetch(`${base}/_/requests?path=/nosuch-19`)).json();
      assert.equal(newest.count, 1, JSON.stringify(newest));
    } finally {
      await stop();
    }
  });
}
