/**
 * Connecting to the records' PostgreSQL database: the `audit.database` URL read here (user, host, port, database and
 * the query's `sslmode`), the password from the URL, else `PGPASSWORD`, else the password file (`PGPASSFILE`, else
 * `~/.pgpass`, read as libpq reads it), and never written anywhere. The driver (`postgres` on npm) is handed every
 * setting itself and an empty environment while it reads its options, so it asks for no environment variable the
 * server was not allowed to read.
 * @module
 */
import process from "node:process";
import postgres from "postgres";

/** The driver's query function, or a transaction's. */
export type Sql = postgres.Sql | postgres.TransactionSql;
/** The driver's client. */
export type Client = postgres.Sql;

/** What a URL names, without its password. */
export interface Target {
  host: string;
  port: number;
  database: string;
  user: string;
  /** `sslmode` from the URL's query (disable, prefer, require, verify-full), if given. */
  ssl?: string;
}

/** Reads a `postgres://` URL; the password is returned apart, so the target can be shown. */
export function parseDatabaseUrl(url: string): { target: Target; password: string | null } {
  const u = new URL(url);
  if (u.protocol !== "postgres:" && u.protocol !== "postgresql:") {
    throw new Error("audit.database: expected a postgres:// URL");
  }
  const database = decodeURIComponent(u.pathname.replace(/^\//, "")) || "mipserver";
  const user = decodeURIComponent(u.username) || "mipserver";
  const ssl = u.searchParams.get("sslmode") ?? undefined;
  return {
    target: {
      host: u.hostname.replace(/^\[|\]$/g, ""),
      port: u.port ? Number(u.port) : 5432,
      database,
      user,
      ...(ssl ? { ssl } : {}),
    },
    password: u.password ? decodeURIComponent(u.password) : null,
  };
}

/** The URL as it may be shown: no password. */
export function shownUrl(t: Target): string {
  return `postgres://${encodeURIComponent(t.user)}@${t.host.includes(":") ? `[${t.host}]` : t.host}:${t.port}/${
    encodeURIComponent(t.database)
  }`;
}

/** One line of a password file split into its five fields (`\` escapes `:` and `\`). */
function pgpassFields(line: string): string[] {
  const fields: string[] = [];
  let field = "";
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === "\\" && i + 1 < line.length) field += line[++i];
    else if (c === ":" && fields.length < 4) (fields.push(field), field = "");
    else field += c;
  }
  fields.push(field);
  return fields;
}

/**
 * The password a libpq password file gives `t` (lines of `host:port:database:user:password`, `*` matching anything,
 * `#` comments), or null. As libpq, a file others may read is not used.
 */
export function passwordFromFile(path: string, t: Target): string | null {
  let text: string;
  try {
    const info = Deno.statSync(path);
    if (!info.isFile || ((info.mode ?? 0) & 0o077) !== 0) return null;
    text = Deno.readTextFileSync(path);
  } catch {
    return null;
  }
  const wanted = [t.host, String(t.port), t.database, t.user];
  for (const line of text.split(/\r?\n/)) {
    if (line === "" || line.startsWith("#")) continue;
    const fields = pgpassFields(line);
    if (fields.length === 5 && wanted.every((w, i) => fields[i] === "*" || fields[i] === w)) return fields[4];
  }
  return null;
}

/** Where the password comes from: the URL, `PGPASSWORD`, or a password file (read at each connection). */
export function passwordSource(
  url: string,
  env: Record<string, string | undefined>,
): { target: Target; password: () => string } {
  const { target, password } = parseDatabaseUrl(url);
  const fromEnv = env.PGPASSWORD;
  const file = env.PGPASSFILE ?? (env.HOME ? `${env.HOME}/.pgpass` : undefined);
  return {
    target,
    password: () => password ?? (fromEnv || null) ?? (file ? passwordFromFile(file, target) : null) ?? "",
  };
}

/** How the client behaves. */
export interface ConnectOptions {
  /** Connections at most (default 4). */
  max?: number;
  /** Seconds to connect, and for a query to wait and run, at most. */
  connectTimeout?: number;
  queryTimeout?: number;
}

/** A client for the records' database (no connection is made until the first query). */
export function connect(url: string, env: Record<string, string | undefined>, o: ConnectOptions = {}): Client {
  const { target, password } = passwordSource(url, env);
  const options = {
    host: target.host,
    port: target.port,
    database: target.database,
    username: target.user,
    password,
    ...(target.ssl ? { ssl: target.ssl } : {}),
    max: o.max ?? 4,
    connect_timeout: o.connectTimeout ?? 10,
    query_timeout: o.queryTimeout ?? 30,
    idle_timeout: 60,
    max_lifetime: 60 * 30,
    onnotice: () => {},
    // Each batch's queries take lists of devices and files of very different lengths: planned for their values every
    // time, not once for all (a generic plan reads whole tables once they grow).
    connection: { application_name: "mipserver", plan_cache_mode: "force_custom_plan" },
  } as postgres.Options<Record<string, never>>;
  // The driver reads PG* variables for every option it was not given; under the server's narrow --allow-env that
  // throws. It is given an empty environment while it reads its options (synchronously, in this call).
  const real = Object.getOwnPropertyDescriptor(process, "env");
  Object.defineProperty(process, "env", { value: {}, configurable: true, writable: true, enumerable: true });
  try {
    return postgres(options);
  } finally {
    if (real) Object.defineProperty(process, "env", real);
  }
}
