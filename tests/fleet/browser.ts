/**
 * Headless Chromium (Debian's `chromium`) driven over the DevTools protocol, with JavaScript switched off for the
 * page (`Emulation.setScriptExecutionDisabled`): load a URL, read the DOM the browser built (`DOM.getOuterHTML`, which
 * needs no script), take a screenshot. (`--dump-dom` cannot be used with JavaScript off: it prints nothing.)
 */
import { tempDir } from "../helpers.ts";

const FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--remote-debugging-port=0",
];

/** A browser page with JavaScript off. */
export interface Page {
  /** Loads `url` and resolves when its load event fired. */
  load(url: string): Promise<void>;
  /** The document as the browser holds it. */
  html(): Promise<string>;
  /** A PNG of the page at the viewport size. */
  screenshot(): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** Starts Chromium and opens one page with JavaScript off, `width` x `height` CSS pixels (a phone by default). */
export async function openPage(width = 412, height = 1800): Promise<Page> {
  const profile = tempDir("chromium-profile-");
  const child = new Deno.Command("chromium", {
    args: [...FLAGS, `--user-data-dir=${profile}`, "about:blank"],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  let endpoint: string | undefined;
  const deadline = Date.now() + 60_000;
  while (!endpoint && Date.now() < deadline) {
    const { value, done } = await lines.read();
    if (done) break;
    seen += value;
    endpoint = /DevTools listening on (ws:\/\/\S+)/.exec(seen)?.[1];
  }
  if (!endpoint) {
    child.kill();
    throw new Error(`Chromium did not start:\n${seen}`);
  }
  // Keep reading its stderr so that it never blocks on a full pipe.
  const draining = (async () => {
    while (!(await lines.read().catch(() => ({ done: true }))).done) { /* drain */ }
  })();

  const ws = new WebSocket(endpoint);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  let nextId = 1;
  const waiting = new Map<number, { resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  const listeners: ((m: { method: string; sessionId?: string }) => void)[] = [];
  ws.onmessage = (event) => {
    const m = JSON.parse(event.data);
    if (m.id !== undefined) {
      const w = waiting.get(m.id);
      waiting.delete(m.id);
      if (m.error) w?.reject(new Error(`${m.error.message} (${m.error.code})`));
      else w?.resolve(m.result);
    } else for (const l of listeners) l(m);
  };
  const send = (method: string, params: Record<string, unknown> = {}, sessionId?: string) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const id = nextId++;
      waiting.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });

  const { targetId } = await send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true }) as { sessionId: string };
  const call = (method: string, params: Record<string, unknown> = {}) => send(method, params, sessionId);
  await call("Page.enable");
  await call("Emulation.setScriptExecutionDisabled", { value: true });
  await call("Emulation.setDeviceMetricsOverride", { width, height, deviceScaleFactor: 1, mobile: true });

  return {
    async load(url) {
      const loaded = new Promise<void>((resolve) => {
        const l = (m: { method: string; sessionId?: string }) => {
          if (m.method === "Page.loadEventFired" && m.sessionId === sessionId) {
            listeners.splice(listeners.indexOf(l), 1);
            resolve();
          }
        };
        listeners.push(l);
      });
      const nav = await call("Page.navigate", { url });
      if (nav.errorText) throw new Error(`Cannot load ${url}: ${nav.errorText}`);
      await loaded;
    },
    async html() {
      const { root } = await call("DOM.getDocument", { depth: -1 }) as { root: { nodeId: number } };
      const { outerHTML } = await call("DOM.getOuterHTML", { nodeId: root.nodeId }) as { outerHTML: string };
      return outerHTML;
    },
    async screenshot() {
      const { data } = await call("Page.captureScreenshot", { format: "png" }) as { data: string };
      return Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
    },
    async close() {
      await send("Browser.close").catch(() => {});
      ws.close();
      await child.status;
      await draining;
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    },
  };
}
