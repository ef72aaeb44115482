/**
 * A small structured logger: one line per event, as readable text or as JSON.
 * @module
 */

/** Log levels, least to most severe. */
export type LogLevel = "debug" | "info" | "warn" | "error";
/** Extra fields of one event. */
export type LogFields = Record<string, unknown>;

/** The logger every module receives. */
export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/** How to build a logger. */
export interface LoggerOptions {
  level?: LogLevel;
  format?: "text" | "json";
  /** Where lines go (default: stdout). */
  write?: (line: string) => void;
  /** The clock (default: `Date.now`). */
  now?: () => number;
}

const SAFE_TEXT = /^[^\s"=]+$/;

function textValue(value: unknown): string {
  if (typeof value === "number" && Number.isFinite(value)) return String(value);
  if (value instanceof Error) value = value.message;
  const s = typeof value === "string" ? value : JSON.stringify(value) ?? String(value);
  return SAFE_TEXT.test(s) ? s : JSON.stringify(s);
}

const LEVEL_TEXT: Record<LogLevel, string> = { debug: "DEBUG", info: "INFO ", warn: "WARN ", error: "ERROR" };

// A busy server logs many lines per millisecond; the time text is made once per millisecond.
let isoTime = 0;
let isoText = new Date(0).toISOString();
function isoOf(time: number): string {
  if (time !== isoTime) {
    isoTime = time;
    isoText = new Date(time).toISOString();
  }
  return isoText;
}

/** Formats one event as text: `<time> <LEVEL> <message> key=value ...`. */
export function formatText(time: number, level: LogLevel, message: string, fields: LogFields = {}): string {
  let line = `${isoOf(time)} ${LEVEL_TEXT[level]} ${message}`;
  for (const key in fields) {
    const value = fields[key];
    if (value !== undefined) line += ` ${key}=${textValue(value)}`;
  }
  return line;
}

/**
 * A line writer for stdout that gathers lines into one write, so a busy server does not pay a system call (or a
 * timer) per request: lines are written within {@linkcode BATCH_MS} ms, at once when 256 are waiting, and by
 * `flush()` at shutdown.
 */
export function batchedStdout(): { write: (line: string) => void; flush: () => void } {
  const encoder = new TextEncoder();
  let pending = "";
  let lines = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const flush = () => {
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    if (lines === 0) return;
    const data = encoder.encode(pending);
    pending = "";
    lines = 0;
    let off = 0;
    while (off < data.length) off += Deno.stdout.writeSync(data.subarray(off));
  };
  return {
    write(line: string) {
      pending += line + "\n";
      if (++lines >= 256) flush();
      else timer ??= setTimeout(flush, BATCH_MS);
    },
    flush,
  };
}

/** How long a line may wait in {@linkcode batchedStdout} before it is written, in ms. */
export const BATCH_MS = 10;

/** Creates a logger that drops events below `level`. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const min = RANK[options.level ?? "info"];
  const json = options.format === "json";
  const write = options.write ?? ((line: string) => console.log(line));
  const now = options.now ?? Date.now;
  const emit = (level: LogLevel) => (message: string, fields?: LogFields) => {
    if (RANK[level] < min) return;
    const time = now();
    if (json) {
      const clean: LogFields = {};
      for (const [k, v] of Object.entries(fields ?? {})) clean[k] = v instanceof Error ? v.message : v;
      write(JSON.stringify({ time: isoOf(time), level, msg: message, ...clean }));
    } else {
      write(formatText(time, level, message, fields));
    }
  };
  return { debug: emit("debug"), info: emit("info"), warn: emit("warn"), error: emit("error") };
}

/** A logger that keeps its lines in memory, for tests. */
export function memoryLogger(level: LogLevel = "debug"): Logger & { lines: string[] } {
  const lines: string[] = [];
  return Object.assign(createLogger({ level, format: "json", write: (l) => lines.push(l) }), { lines });
}
