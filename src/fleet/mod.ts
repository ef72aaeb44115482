/**
 * The fleet room: what devices installed, and who may look.
 *
 * - `installs.ts` groups device requests into installs, off the request path; `audit_db.ts` keeps them in SQLite.
 * - `fleet.ts` answers the queries (installs, inventory, who runs which version); `routes.ts` serves them and the
 *   status page (`status_page.ts`), with figures from `stats.ts`, `health.ts` and `cache_figures.ts`.
 * - `wire.ts` builds all of it for an app.
 * - `access.ts` guards the admin routes (token, or loopback and `server.admin_from`); `net.ts` reads addresses and
 *   CIDR ranges and the client behind a trusted proxy.
 * @module
 */
export { AdminAccess, isAdminPath } from "./access.ts";
export { AuditDb } from "../records/sqlite/audit_db.ts";
export { Fleet } from "./fleet.ts";
export { InstallRecorder } from "./installs.ts";
export { CidrSet, clientAddress, isLoopback } from "./net.ts";
export { addFleetRoutes } from "./routes.ts";
export { Stats } from "./stats.ts";
export { UpstreamHealth } from "./health.ts";
export { createFleet } from "./wire.ts";
