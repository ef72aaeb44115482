/**
 * The fleet routes: `GET /_/installs`, `GET /_/devices`, `GET /_/packages/{name}` (JSON, or CSV with `?format=csv`)
 * and the status page at `/`. They are admin routes: the handler asks `access.ts` before they run.
 * @module
 */
import { bytesResponse, HttpError, jsonResponse } from "../http/responses.ts";
import type { Router } from "../http/router.ts";
import type { InstallQuery } from "../records/records.ts";
import { toCsv } from "./csv.ts";
import type { DeviceView, Fleet } from "./fleet.ts";
import { renderStatusPage, type StatusFacts } from "./status_page.ts";

/** Most installs one query answers. */
export const MAX_LIMIT = 10_000;
const STATUSES = new Set(["complete", "partial", "failed"]);
const ISO_8601 = /^\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d{1,9})?)?(?:Z|[+-]\d\d:?\d\d)?)?$/;
const NO_STORE = { "cache-control": "no-store" };

/** Reads `format` and checks that only `allowed` keys are given. */
function formatOf(params: URLSearchParams, allowed: string[]): "json" | "csv" {
  for (const key of params.keys()) {
    if (key !== "format" && !allowed.includes(key)) {
      const list = [...allowed, "format"].join(", ");
      throw new HttpError(400, `Unknown parameter ${JSON.stringify(key)}: use ${list}`);
    }
  }
  const format = params.get("format") ?? "json";
  if (format !== "json" && format !== "csv") {
    throw new HttpError(400, `Invalid format ${JSON.stringify(format)}: expected json or csv`);
  }
  return format;
}

/** Parses the filters of `/_/installs`; bad input is a 400 naming the parameter. */
export function parseInstallQuery(params: URLSearchParams): InstallQuery {
  const q: InstallQuery = { limit: 100 };
  const text = (key: string): string | undefined => {
    const v = params.get(key);
    if (v === null) return undefined;
    if (v === "" || v.length > 300) throw new HttpError(400, `Invalid ${key}: expected 1 to 300 characters`);
    return v;
  };
  q.device = text("device");
  q.package = text("package");
  q.site = text("site");
  const status = params.get("status");
  if (status !== null) {
    if (!STATUSES.has(status)) {
      throw new HttpError(400, `Invalid status ${JSON.stringify(status)}: expected complete, partial or failed`);
    }
    q.status = status;
  }
  const since = params.get("since");
  if (since !== null) {
    const ms = ISO_8601.test(since) ? Date.parse(since) : NaN;
    if (Number.isNaN(ms)) {
      throw new HttpError(400, `Invalid since ${JSON.stringify(since.slice(0, 60))}: expected an ISO 8601 time`);
    }
    q.since = ms;
  }
  const limit = params.get("limit");
  if (limit !== null) {
    const n = /^\d{1,6}$/.test(limit) ? Number(limit) : NaN;
    if (!(n >= 1 && n <= MAX_LIMIT)) {
      throw new HttpError(400, `Invalid limit ${JSON.stringify(limit.slice(0, 20))}: expected 1 to ${MAX_LIMIT}`);
    }
    q.limit = n;
  }
  return q;
}

function csvResponse(text: string): Response {
  return bytesResponse(new TextEncoder().encode(text), {
    contentType: "text/csv; charset=utf-8",
    headers: NO_STORE,
  });
}

const INSTALL_COLUMNS = [
  "id",
  "site",
  "device",
  "device_name",
  "package",
  "version",
  "mpy",
  "profile",
  "status",
  "files_listed",
  "files_served",
  "bytes",
  "started_at",
  "finished_at",
  "error",
];

const DEVICE_COLUMNS = [
  "site",
  "device",
  "name",
  "last_seen",
  "package",
  "version",
  "mpy",
  "profile",
  "installed_at",
  "latest",
  "outdated",
  "last_status",
];

function deviceRows(devices: DeviceView[]): Record<string, unknown>[] {
  return devices.flatMap((d) =>
    d.packages.length === 0
      ? [{ site: d.site, device: d.device, name: d.name, last_seen: d.last_seen }]
      : d.packages.map((p) => ({ site: d.site, device: d.device, name: d.name, last_seen: d.last_seen, ...p }))
  );
}

/** What the status page needs besides the fleet. */
export interface FleetRouteDeps {
  fleet: Fleet;
  /** Everything else the status page shows (version, upstreams, cache, compiler, ...). */
  facts: () => Promise<Omit<StatusFacts, "devices" | "installs">>;
}

/** The `site` filter of `/_/devices` and `/_/packages/{name}`, if given. */
function siteOf(params: URLSearchParams): string | undefined {
  const v = params.get("site");
  if (v === null) return undefined;
  if (v === "" || v.length > 300) throw new HttpError(400, "Invalid site: expected 1 to 300 characters");
  return v;
}

/**
 * Reads the records, or answers 503 with the reason when their database cannot be read (PostgreSQL down): devices are
 * served all the same, and what they install waits in the local outbox.
 */
async function read<T>(what: () => Promise<T>): Promise<T> {
  try {
    return await what();
  } catch (e) {
    if (e instanceof HttpError) throw e;
    throw new HttpError(
      503,
      `The install records cannot be read now (${
        (e as Error)?.message ?? e
      }); devices are served, and their records wait to be written`,
      { "retry-after": "10" },
    );
  }
}

/** Adds the fleet routes and the status page. */
export function addFleetRoutes(router: Router, deps: FleetRouteDeps): void {
  const { fleet } = deps;

  router.get("/_/installs", async ({ url }) => {
    const format = formatOf(url.searchParams, ["device", "package", "status", "since", "site", "limit"]);
    const query = parseInstallQuery(url.searchParams);
    const installs = await read(() => fleet.installs(query));
    if (format === "csv") return csvResponse(toCsv(INSTALL_COLUMNS, installs as unknown as Record<string, unknown>[]));
    return jsonResponse({ enabled: fleet.enabled, count: installs.length, installs }, {
      pretty: true,
      headers: NO_STORE,
    });
  });

  router.get("/_/devices", async ({ url }) => {
    const format = formatOf(url.searchParams, ["site"]);
    const site = siteOf(url.searchParams);
    const devices = await read(() => fleet.devices(undefined, site));
    if (format === "csv") return csvResponse(toCsv(DEVICE_COLUMNS, deviceRows(devices)));
    return jsonResponse({ enabled: fleet.enabled, count: devices.length, devices }, {
      pretty: true,
      headers: NO_STORE,
    });
  });

  router.get("/_/packages/*name", async ({ url, params }) => {
    const format = formatOf(url.searchParams, ["site"]);
    const site = siteOf(url.searchParams);
    const name = params.name;
    const devices = await read(() => fleet.devices(name, site));
    const rows = devices.map((d) => ({
      site: d.site,
      device: d.device,
      name: d.name,
      last_seen: d.last_seen,
      ...d.packages[0],
    }));
    if (format === "csv") return csvResponse(toCsv(DEVICE_COLUMNS, rows));
    const versions: Record<string, number> = {};
    for (const r of rows) if (r.version) versions[r.version] = (versions[r.version] ?? 0) + 1;
    return jsonResponse({
      package: name,
      latest: rows[0]?.latest ?? null,
      versions,
      count: rows.length,
      devices: rows.map(({ package: _, ...rest }) => rest),
    }, { pretty: true, headers: NO_STORE });
  });

  router.get("/", async () => {
    // The page is shown while the records' database cannot be read, saying so.
    let unreadable: string | null = null;
    const orNothing = <T>(p: Promise<T[]>) =>
      p.catch((e) => {
        unreadable = (e as Error)?.message ?? String(e);
        return [] as T[];
      });
    const [facts, devices, installs] = await Promise.all([
      deps.facts(),
      orNothing(fleet.devices()),
      orNothing(fleet.installs({ limit: 20 })),
    ]);
    const html = renderStatusPage({ ...facts, devices, installs, unreadable });
    return bytesResponse(new TextEncoder().encode(html), {
      contentType: "text/html; charset=utf-8",
      headers: {
        ...NO_STORE,
        "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
      },
    });
  });
}
