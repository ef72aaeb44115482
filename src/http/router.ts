/**
 * A small router: a readable route table, strict parameter parsing, 404 for unknown paths, 405 for wrong
 * methods, and HEAD wherever GET works. Static paths are looked up in a Map; patterns are matched segment by
 * segment on the decoded path, and a segment that decodes to `.`, `..`, or holds `/`, `\` or NUL is refused.
 * @module
 */
import { HttpError, type Shareable } from "./responses.ts";

/** Route parameters by name, decoded. */
export type Params = Record<string, string>;

/** What a parameter must look like. */
export interface ParamSpec {
  /** The whole decoded value must match. */
  pattern: RegExp;
  /** Said in the 400 answer, e.g. `"py" or a number`. */
  expected: string;
}

/** What a handler receives. */
export interface RouteContext {
  request: Request;
  url: URL;
  params: Params;
  /** The matched route pattern. */
  route: string;
  /** The client's address. */
  client: string;
  /** Facts the handler adds to this request's log line (cache outcome, upstream time, ...). */
  meta: Record<string, unknown>;
  /**
   * Set by a handler that answered with a cached object, hit or not: what it sent (the install records read a
   * manifest's bytes from it instead of a copy of the response).
   */
  answer?: Shareable;
  /** Set by a handler whose answer is an unchanged cache hit that may be repeated for a moment (`edge.ts`). */
  shareable?: Shareable;
}

/** A route handler: a plain function from the request to a response. */
export type Handler = (ctx: RouteContext) => Response | Promise<Response>;

/** HTTP methods the router serves. */
export type Method = "GET" | "POST" | "PUT" | "DELETE";

type Segment = { literal: string } | { param: string; suffix: string } | { rest: string };

interface Route {
  method: Method;
  path: string;
  handler: Handler;
  segments: Segment[];
  params: Record<string, ParamSpec>;
}

/** The outcome of a lookup. */
export type Match =
  | { route: string; handler: Handler; params: Params }
  | { route: string; error: HttpError };

const MAX_SEGMENT = 1024;

/** Splits a raw (percent-encoded) path into decoded segments, refusing anything that could escape a folder. */
export function decodeSegments(pathname: string): string[] {
  if (!pathname.startsWith("/")) throw new HttpError(400, "Path must start with /");
  const raw = pathname.slice(1).split("/");
  const encoded = pathname.includes("%");
  return raw.map((part) => {
    let seg = part;
    if (encoded) {
      try {
        seg = decodeURIComponent(part);
      } catch {
        throw new HttpError(400, "Malformed percent-encoding in path");
      }
    }
    if (seg.length > MAX_SEGMENT) throw new HttpError(414, "Path segment too long");
    if (seg === "." || seg === ".." || /[\/\\\0]/.test(seg)) {
      throw new HttpError(400, "Invalid path segment");
    }
    return seg;
  });
}

function compile(path: string): Segment[] {
  return path.slice(1).split("/").map((part, i, all): Segment => {
    if (part.startsWith("*")) {
      if (i !== all.length - 1) throw new Error(`Rest parameter must be last in ${path}`);
      return { rest: part.slice(1) };
    }
    const m = /^:([a-z_][a-z0-9_]*)(.*)$/i.exec(part);
    return m ? { param: m[1], suffix: m[2] } : { literal: part };
  });
}

/** Routes requests to handlers. */
export class Router {
  #static = new Map<string, Route[]>();
  #patterns: Route[] = [];

  /** Adds a route. `path` segments: `literal`, `:name`, `:name.suffix`, and a last `*name` for the rest. */
  add(method: Method, path: string, handler: Handler, params: Record<string, ParamSpec> = {}): this {
    const segments = compile(path);
    const route: Route = { method, path, handler, segments, params };
    if (segments.every((s) => "literal" in s)) {
      const list = this.#static.get(path) ?? [];
      list.push(route);
      this.#static.set(path, list);
    } else {
      this.#patterns.push(route);
    }
    return this;
  }

  /** Shorthand for `add("GET", ...)`; GET routes answer HEAD too. */
  get(path: string, handler: Handler, params?: Record<string, ParamSpec>): this {
    return this.add("GET", path, handler, params);
  }

  /** Finds the handler for a method and a raw pathname. */
  match(method: string, pathname: string): Match {
    const lookup = method === "HEAD" ? "GET" : method;
    const candidates: { route: Route; params: Params }[] = [];
    const found = this.#static.get(pathname);
    if (found) {
      for (const route of found) candidates.push({ route, params: {} });
    } else {
      let segments: string[];
      try {
        segments = decodeSegments(pathname);
      } catch (e) {
        return { route: "invalid", error: e as HttpError };
      }
      for (const route of this.#patterns) {
        const params = matchSegments(route.segments, segments);
        if (params) candidates.push({ route, params });
      }
    }
    if (candidates.length === 0) return { route: "unmatched", error: new HttpError(404, "Not found") };
    const hit = candidates.find((c) => c.route.method === lookup);
    if (!hit) {
      const allow = [
        ...new Set(candidates.flatMap((c) => c.route.method === "GET" ? ["GET", "HEAD"] : [c.route.method])),
      ];
      return {
        route: candidates[0].route.path,
        error: new HttpError(405, `Method ${method} not allowed; use ${allow.join(", ")}`, { allow: allow.join(", ") }),
      };
    }
    for (const [name, spec] of Object.entries(hit.route.params)) {
      const value = hit.params[name];
      const why = value === undefined ? undefined : paramProblem(name, value, spec);
      if (why) return { route: hit.route.path, error: new HttpError(400, why) };
    }
    return { route: hit.route.path, handler: hit.route.handler, params: hit.params };
  }
}

/** Why `value` is not a valid parameter `name` (the 400 answer's text), or undefined when it is. */
export function paramProblem(name: string, value: string, spec: ParamSpec): string | undefined {
  if (spec.pattern.test(value)) return undefined;
  const shown = value.length > 80 ? `${value.slice(0, 77)}...` : value;
  return `Invalid ${name} ${JSON.stringify(shown)}: expected ${spec.expected}`;
}

function matchSegments(pattern: Segment[], segments: string[]): Params | undefined {
  const params: Params = {};
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i];
    if ("rest" in p) {
      const rest = segments.slice(i);
      if (rest.length === 0 || rest.some((s) => s === "")) return undefined;
      params[p.rest] = rest.join("/");
      return params;
    }
    const seg = segments[i];
    if (seg === undefined) return undefined;
    if ("literal" in p) {
      if (seg !== p.literal) return undefined;
    } else {
      if (!seg.endsWith(p.suffix) || seg.length === p.suffix.length) return undefined;
      params[p.param] = seg.slice(0, seg.length - p.suffix.length);
    }
  }
  return segments.length === pattern.length ? params : undefined;
}
