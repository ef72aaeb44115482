/**
 * The records' schema in PostgreSQL, made and moved forward by the server: numbered migrations, each applied once in
 * one transaction and noted in `mipserver.migrations`, under an advisory lock so replicas starting together apply
 * each once. A database written by a newer mipserver (a higher number than this code knows) is not touched.
 *
 * Everything lives in the schema `mipserver`; the database user needs to create it at the first start (`CREATE` on
 * the database, or a schema made for it beforehand), and afterwards only to read and write its tables.
 * @module
 */
import type { Client } from "./connect.ts";

/** One step of the schema. */
export interface Migration {
  version: number;
  /** What it does, for the log. */
  what: string;
  statements: string[];
}

/** The advisory lock the migrations are applied under (any number of the database's own; this one is ours). */
export const MIGRATION_LOCK = 0x6d69_7031;

/** The schema's steps, in order. A released step is never changed: a change is a new step. */
export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    what: "installs, requests outside installs, failed-request counts, files served, devices, writers",
    statements: [
      `create table mipserver.installs (
        id bigserial primary key,
        writer text not null,
        local_id bigint not null,
        site text not null,
        device text not null,
        package text not null,
        version text,
        mpy text,
        profile text,
        status smallint not null,
        unknown boolean not null default false,
        listed text[] not null default '{}',
        own_served text[] not null default '{}',
        extra_served text[] not null default '{}',
        files_listed integer not null,
        files_served integer not null,
        own_bytes bigint not null,
        extra_bytes bigint not null default 0,
        own_requests integer not null,
        extra_requests integer not null default 0,
        started_at bigint not null,
        own_finished bigint not null,
        extra_finished bigint not null default 0,
        error text,
        extra_error text,
        unique (writer, local_id)
      )`,
      "create index installs_device on mipserver.installs (site, device, started_at)",
      "create index installs_started on mipserver.installs (started_at)",
      `create table mipserver.loose (
        id bigserial primary key,
        site text not null,
        device text not null,
        file text not null,
        path text not null,
        method text not null,
        status integer not null,
        cache text,
        minute bigint not null,
        at bigint not null,
        last bigint not null,
        count integer not null,
        bytes bigint not null,
        install_id bigint references mipserver.installs (id) on delete cascade
      )`,
      "create index loose_device on mipserver.loose (site, device, at)",
      "create index loose_install on mipserver.loose (install_id)",
      "create index loose_at on mipserver.loose (at)",
      `create table mipserver.requests (
        id bigserial primary key,
        site text not null,
        time bigint not null,
        device text not null,
        method text not null,
        path text not null,
        status integer not null,
        cache text,
        count integer not null,
        bytes bigint not null
      )`,
      "create index requests_time on mipserver.requests (time)",
      `create table mipserver.traffic (
        site text not null,
        time bigint not null,
        device text not null,
        status integer not null,
        count integer not null,
        bytes bigint not null,
        primary key (site, time, device, status)
      )`,
      "create index traffic_time on mipserver.traffic (time)",
      `create table mipserver.device_files (
        site text not null,
        device text not null,
        file text not null,
        first_at bigint not null,
        last_at bigint not null,
        primary key (site, device, file)
      )`,
      "create index device_files_last on mipserver.device_files (last_at)",
      `create table mipserver.devices (
        site text not null,
        device text not null,
        last_seen bigint not null,
        primary key (site, device)
      )`,
      "create index devices_seen on mipserver.devices (last_seen)",
      `create table mipserver.writers (
        writer text primary key,
        site text not null,
        last_seq bigint not null,
        seen_at bigint not null
      )`,
    ],
  },
  {
    version: 2,
    what: "device names as each site's devices: gives them; installs by package",
    statements: [
      "alter table mipserver.devices add column name text",
      "create index installs_package on mipserver.installs (package, started_at)",
    ],
  },
];

/** The schema version this code reads and writes. */
export const SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1].version;

/** Thrown when the database's schema is newer than this code. */
export class NewerSchema extends Error {
  constructor(version: number) {
    super(
      `the install records' database was written by a newer mipserver (schema ${version}, this one knows ${SCHEMA_VERSION}); upgrade this server`,
    );
    this.name = "NewerSchema";
  }
}

/**
 * Brings the database's schema to `target` (default: this code's), applying the steps it lacks in one transaction;
 * returns the version it found and the steps applied.
 */
export async function migrate(
  sql: Client,
  target = SCHEMA_VERSION,
): Promise<{ from: number; applied: Migration[] }> {
  return await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(${MIGRATION_LOCK})`;
    // Made only when missing: CREATE ... IF NOT EXISTS asks for the right to create every time, which a user that
    // only reads and writes the tables does not have.
    const [schema] = await tx`select 1 as x from pg_namespace where nspname = 'mipserver'`;
    if (!schema) await tx`create schema mipserver`;
    const [log] = await tx`select to_regclass('mipserver.migrations') is not null as x`;
    if (!log.x) {
      await tx`create table mipserver.migrations (
        version integer primary key,
        what text not null,
        applied_at timestamptz not null default now()
      )`;
    }
    const [{ v }] = await tx`select coalesce(max(version), 0)::int as v from mipserver.migrations`;
    const from = Number(v);
    if (from > SCHEMA_VERSION) throw new NewerSchema(from);
    const applied = MIGRATIONS.filter((m) => m.version > from && m.version <= target);
    for (const m of applied) {
      for (const statement of m.statements) await tx.unsafe(statement);
      await tx`insert into mipserver.migrations (version, what) values (${m.version}, ${m.what})`;
    }
    return { from, applied };
  }) as { from: number; applied: Migration[] };
}
