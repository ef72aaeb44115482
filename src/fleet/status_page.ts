/**
 * The status page at `/`: one server-rendered HTML document with inline CSS and an inline SVG chart. No script, no
 * build step, nothing fetched from elsewhere, so it works offline, with JavaScript off, and on a phone.
 * @module
 */
import type { DeviceView, InstallView } from "./fleet.ts";
import type { HostHealth } from "./health.ts";
import type { RecordFigures } from "./installs.ts";
import type { RecentError, Span } from "./stats.ts";
import type { LockFacts } from "../packages/lock_file.ts";

/** Everything the page shows. */
export interface StatusFacts {
  version: string;
  uptimeMs: number;
  now: number;
  upstreams: { url: string; host: string; health: HostHealth | null; index_age_ms: number | null }[];
  otherHosts: HostHealth[];
  cache: { bytes: number; objects: number } | null;
  requests: number;
  hitRatio: number | null;
  spans: Span[];
  devices: DeviceView[];
  installs: InstallView[];
  /** Why the records' database could not be read for this page (PostgreSQL down), or null. */
  unreadable?: string | null;
  errors: RecentError[];
  compiler: { version: string | null; mpy: string | null };
  profiles: string[];
  /** `policy.lock`: the lock in force, who signed it and when; absent or null without one. */
  lock?: LockFacts | null;
  audit: {
    enabled: boolean;
    window_ms: number;
    retention_ms: number;
    /** What the records hold and left out (`InstallRecorder.figures`). */
    records: RecordFigures;
  };
}

/** Escapes text for HTML content and attribute values. */
export function escapeHtml(s: unknown): string {
  return String(s ?? "").replace(
    /[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!,
  );
}

/** A duration for people: `3d 4h`, `5m 2s`, `800ms`. */
export function formatAge(ms: number): string {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))}ms`;
  const s = Math.floor(ms / 1000);
  const parts: [number, string][] = [[Math.floor(s / 86400), "d"], [Math.floor(s / 3600) % 24, "h"], [
    Math.floor(s / 60) % 60,
    "m",
  ], [s % 60, "s"]];
  const first = parts.findIndex(([n]) => n > 0);
  return parts.slice(first, first + 2).filter(([n]) => n > 0).map(([n, u]) => `${n}${u}`).join(" ");
}

/** Bytes for people: `12.3 MiB`. */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) (n /= 1024, i++);
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

/** A warning paragraph when install records were dropped, forgotten, not kept or not written; else nothing. */
export function recordsWarning(audit: StatusFacts["audit"]): string {
  const r = audit.records;
  if (!audit.enabled) return "";
  const said: string[] = [];
  if (r.rows_dropped > 0) said.push(`${r.rows_dropped} rows deleted early to stay within audit.max_size`);
  if (r.devices_forgotten > 0) said.push(`${r.devices_forgotten} devices forgotten past audit.max_devices`);
  if (r.requests_not_kept > 0) said.push(`${r.requests_not_kept} requests counted but not kept (too many at once)`);
  if (r.requests_unwritten > 0) said.push(`${r.requests_unwritten} requests not written (the database failed)`);
  if (r.write_error !== null) said.push(`writing fails now (${r.write_error})`);
  const db = r.database;
  if (db && db.state !== "ok") {
    said.push(
      `the database cannot be reached (${db.state}): ${db.waiting_batches} batches of ${db.waiting_requests} requests wait in the local outbox`,
    );
  }
  if (db && db.requests_refused > 0) said.push(`${db.requests_refused} requests refused by the full outbox`);
  if (said.length === 0) return "";
  return `<p id="records-dropped" class="warn">Install records since start: ${escapeHtml(said.join("; "))}.</p>\n`;
}

/** The lock line: how many packages `policy.lock` holds, who signed it and when; nothing without a lock. */
export function lockLine(lock: LockFacts | null | undefined): string {
  if (!lock) return "";
  const e = escapeHtml;
  const when = (iso: string) => `<time datetime="${e(iso)}">${e(iso.replace("T", " ").slice(0, 19))}</time> UTC`;
  const signed = lock.signed
    ? `signed by key <code>${e(lock.signed.key_id)}</code> at ${when(lock.signed.signed_at)}`
    : `<span class="tag outdated">unsigned</span>`;
  const refused = lock.reload?.refused
    ? ` <span class="tag failed">the lock read again at ${when(lock.reload.at)} was refused (${
      e(lock.reload.refused)
    }); this one stays in force</span>`
    : "";
  return `<p>Lock: <span id="lock">${lock.packages} packages, ${signed}</span>${refused}</p>\n`;
}

const pct = (r: number | null) => (r === null ? "—" : `${(r * 100).toFixed(1)}%`);

/** The chart: requests per span as bars, the hit ratio as a line (0–100 % on the right-hand scale). */
export function chartSvg(spans: Span[]): string {
  const w = 600, h = 160, pad = 24;
  const max = Math.max(1, ...spans.map((s) => s.requests));
  const bw = (w - 2 * pad) / spans.length;
  const y = (v: number) => h - pad - (v / max) * (h - 2 * pad);
  const bars = spans.map((s, i) =>
    s.requests === 0
      ? ""
      : `<rect x="${(pad + i * bw).toFixed(1)}" y="${y(s.requests).toFixed(1)}" width="${
        Math.max(1, bw - 1).toFixed(1)
      }" height="${(h - pad - y(s.requests)).toFixed(1)}" class="bar"><title>${s.requests} requests</title></rect>`
  ).join("");
  const points = spans.map((s, i) =>
    s.lookups === 0
      ? null
      : `${(pad + i * bw + bw / 2).toFixed(1)},${(h - pad - (s.hits / s.lookups) * (h - 2 * pad)).toFixed(1)}`
  ).filter((p) => p !== null);
  const line = points.length > 1 ? `<polyline points="${points.join(" ")}" class="ratio"/>` : "";
  const dots = points.map((p) => {
    const [cx, cy] = p.split(",");
    return `<circle cx="${cx}" cy="${cy}" r="2.5" class="dot"/>`;
  }).join("");
  return `<svg viewBox="0 0 ${w} ${h}" role="img" aria-label="Requests and cache hit ratio over the last 24 hours" ` +
    `class="chart" xmlns="http://www.w3.org/2000/svg">` +
    `<line x1="${pad}" y1="${h - pad}" x2="${w - pad}" y2="${h - pad}" class="axis"/>` +
    `<text x="${pad}" y="14" class="lbl">${max} req</text><text x="${
      w - pad
    }" y="14" class="lbl" text-anchor="end">100% hits</text>` +
    `<text x="${pad}" y="${h - 6}" class="lbl">24 h ago</text><text x="${w - pad}" y="${
      h - 6
    }" class="lbl" text-anchor="end">now</text>` +
    bars + line + dots + `</svg>`;
}

const CSS = `
:root{color-scheme:light dark;--fg:#1b1f24;--bg:#fff;--mut:#667;--line:#d0d7de;--warn:#fff3cd;--bad:#f8d7da;--ok:#1a7f37}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--mut:#8b949e;--line:#30363d;--warn:#3b2e00;--bad:#4a1418;--ok:#3fb950}}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);margin:0;padding:12px;max-width:1100px}
h1{font-size:1.3em;margin:.2em 0}h2{font-size:1.1em;margin:1.2em 0 .4em;border-bottom:1px solid var(--line)}
.mut{color:var(--mut)}.grid{display:flex;flex-wrap:wrap;gap:8px}.card{border:1px solid var(--line);border-radius:6px;padding:6px 10px;min-width:120px}
.card b{display:block;font-size:1.25em}.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;font-size:.93em}
th,td{text-align:left;padding:4px 6px;border-bottom:1px solid var(--line);vertical-align:top}
tr.outdated,tr.partial,span.outdated,span.partial{background:var(--warn)}tr.failed,span.failed{background:var(--bad)}
.tag{font-size:.8em;border-radius:3px;padding:0 4px;border:1px solid var(--line)}.ok{color:var(--ok)}
.chart{width:100%;max-width:600px;height:auto}.bar{fill:#8ab4f8}.ratio{fill:none;stroke:#e8710a;stroke-width:2}.dot{fill:#e8710a}
.axis{stroke:var(--mut)}.lbl{font-size:11px;fill:var(--mut)}code{font-size:.92em}
p.warn{background:var(--warn);padding:4px 8px;border-radius:4px}
`;

function table(head: string[], rows: string[]): string {
  if (rows.length === 0) return `<p class="mut">None yet.</p>`;
  return `<div class="scroll"><table><thead><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr></thead><tbody>${
    rows.join("")
  }</tbody></table></div>`;
}

/** Renders the whole page. */
export function renderStatusPage(f: StatusFacts): string {
  const e = escapeHtml;
  const time = (
    iso: string | null,
  ) => (iso ? `<time datetime="${e(iso)}">${e(iso.replace("T", " ").slice(0, 19))}</time>` : "—");
  const healthCell = (h: HostHealth | null) => {
    if (!h) return `<span class="mut">not contacted yet</span>`;
    if (h.failing_since !== null) {
      return `<span class="tag failed">failing</span> last ${e(h.last_status)} ${formatAge(f.now - h.last_at)} ago`;
    }
    return `<span class="ok">ok</span> <span class="mut">last ${e(h.last_status)} ${
      formatAge(f.now - h.last_at)
    } ago</span>`;
  };
  const upstreamRows = [
    ...f.upstreams.map((u) =>
      `<tr data-upstream="${e(u.url)}"><td>index <code>${e(u.url)}</code></td><td>${healthCell(u.health)}</td><td>${
        u.index_age_ms === null ? `<span class="mut">not cached</span>` : e(formatAge(u.index_age_ms))
      }</td></tr>`
    ),
    ...f.otherHosts.map((h) =>
      `<tr data-upstream="${e(h.host)}"><td><code>${e(h.host)}</code></td><td>${healthCell(h)}</td><td>—</td></tr>`
    ),
  ];
  // Devices of several sites (one database shared by sites) are shown with their site's name.
  const sites = new Set(f.devices.map((d) => d.site)).size > 1;
  const deviceRows = f.devices.flatMap((d) => {
    const site = sites ? ` <span class="tag site" data-site="${e(d.site)}">${e(d.site)}</span>` : "";
    const name = (d.name ? `${e(d.name)} <span class="mut">${e(d.device)}</span>` : e(d.device)) + site;
    if (d.packages.length === 0) {
      return [
        `<tr data-device="${e(d.device)}"><td>${name}</td><td colspan="4" class="mut">no installs</td><td>${
          time(d.last_seen)
        }</td></tr>`,
      ];
    }
    return d.packages.map((p) => {
      const cls = p.last_status !== "complete" ? p.last_status : p.outdated ? "outdated" : "";
      const flags = [
        p.outdated ? `<span class="tag outdated">outdated: ${e(p.latest)} available</span>` : "",
        p.last_status !== "complete"
          ? `<span class="tag ${e(p.last_status)}">last install ${e(p.last_status)}</span>`
          : "",
      ].filter(Boolean).join(" ");
      return `<tr class="${cls}" data-device="${e(d.device)}" data-package="${e(p.package)}"><td>${name}</td><td>${
        e(p.package)
      }</td><td>${e(p.version ?? "—")}</td><td>${flags || `<span class="ok">up to date</span>`}</td><td>${
        e(p.profile ?? (p.mpy ? `mpy ${p.mpy}` : ""))
      }</td><td>${time(d.last_seen)}</td></tr>`;
    });
  });
  const installRows = f.installs.map((i) =>
    `<tr class="${i.status === "complete" ? "" : e(i.status)}"><td>${time(i.started_at)}</td><td>${
      e(i.device_name ?? i.device)
    }</td><td>${e(i.package)}</td><td>${e(i.version ?? "—")}</td><td><span class="tag ${e(i.status)}">${
      e(i.status)
    }</span></td><td>${i.files_served}/${i.files_listed}</td><td>${e(formatBytes(i.bytes))}</td></tr>`
  );
  const errorRows = f.errors.map((x) =>
    `<tr><td>${time(new Date(x.time).toISOString())}</td><td>${e(x.client)}</td><td>${x.status}</td><td><code>${
      e(x.method)
    } ${e(x.path.length > 120 ? x.path.slice(0, 117) + "..." : x.path)}</code></td><td>${e(x.reason)}</td></tr>`
  );
  const outdated = f.devices.filter((d) => d.packages.some((p) => p.outdated)).length;
  const partial = f.devices.filter((d) => d.packages.some((p) => p.last_status !== "complete")).length;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>mipserver status</title><style>${CSS}</style></head>
<body>
<h1>mipserver <span id="version">${e(f.version)}</span></h1>
<p class="mut">up <span id="uptime">${e(formatAge(f.uptimeMs))}</span> · page made ${
    e(new Date(f.now).toISOString().slice(0, 19).replace("T", " "))
  } UTC</p>
<div class="grid">
<div class="card">devices<b id="device-count">${f.devices.length}</b></div>
<div class="card">outdated<b id="outdated-count">${outdated}</b></div>
<div class="card">not complete<b id="partial-count">${partial}</b></div>
<div class="card">requests<b id="requests">${f.requests}</b></div>
<div class="card">cache hit ratio<b id="hit-ratio">${pct(f.hitRatio)}</b></div>
<div class="card">cache size<b id="cache-size">${f.cache ? e(formatBytes(f.cache.bytes)) : "—"}</b></div>
<div class="card">cached objects<b id="cache-objects">${f.cache ? f.cache.objects : "—"}</b></div>
</div>
<h2>Requests and cache hit ratio, last 24 h</h2>
${chartSvg(f.spans)}
<p class="mut">Bars: requests per 15 minutes. Line: share of cache lookups answered from the cache.</p>
<h2>Devices</h2>
${
    f.unreadable
      ? `<p id="records-unreadable" class="warn">The install records cannot be read now: ${
        e(f.unreadable)
      }. Devices are served; their records wait to be written.</p>\n`
      : ""
  }${
    f.audit.enabled
      ? table(["device", "package", "version", "state", "profile", "last seen"], deviceRows)
      : `<p class="mut">Install records are off (audit.enabled: false).</p>`
  }
<h2>Recent installs</h2>
${table(["started", "device", "package", "version", "status", "files", "bytes"], installRows)}
<h2>Upstreams</h2>
${table(["upstream", "health", "index age"], upstreamRows)}
<h2>Recent errors</h2>
${table(["time", "client", "status", "request", "reason"], errorRows)}
<h2>Compiler and profiles</h2>
<p>mpy-cross: <span id="mpy-cross">${
    f.compiler.version ? `${e(f.compiler.version)} (.mpy ${e(f.compiler.mpy)})` : "not available: .py served as is"
  }</span></p>
<p>Profiles: <span id="profiles">${
    f.profiles.length ? f.profiles.map((p) => `<code>${e(p)}</code>`).join(", ") : "none"
  }</span></p>
${lockLine(f.lock)}${recordsWarning(f.audit)}<p class="mut">Install records: ${
    f.audit.enabled
      ? `kept ${e(formatAge(f.audit.retention_ms))}, grouped within ${e(formatAge(f.audit.window_ms))}, ${
        f.audit.records.engine === "postgres"
          ? `in PostgreSQL (at most ${f.audit.records.max_rows ?? 0} rows), the local outbox ${
            e(formatBytes(f.audit.records.size_bytes))
          } of ${e(formatBytes(f.audit.records.max_bytes ?? 0))}`
          : `${e(formatBytes(f.audit.records.size_bytes))} of ${
            e(formatBytes(f.audit.records.max_bytes ?? 0))
          } (audit.max_size)`
      }`
      : "off"
  }. JSON: <code>/_/installs</code>, <code>/_/devices</code>, <code>/_/packages/NAME</code> (add <code>?format=csv</code>).</p>
</body></html>
`;
}
