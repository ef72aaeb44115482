/**
 * A small Prometheus text exposition (format 0.0.4): counters, gauges and histograms with labels, and a registry
 * that renders them for `GET /metrics`. It replaces prom-client, whose dependency tree (tdigest → bintrees) ships
 * test data that `deno compile` cannot parse, and which costs memory a gateway does not need. The classes follow
 * prom-client's shape (`new Counter({ name, help, labelNames, registers, collect })`, `inc`, `set`, `observe`), so
 * code written against it reads the same.
 *
 * Every labelled metric holds at most {@linkcode MAX_SERIES} series: label values are meant to come from a closed
 * set, and anything past that budget is counted under `OTHER` rather than growing memory with client input.
 * @module
 */

/** The most series one metric keeps; further label sets are counted under the value `OTHER`. */
export const MAX_SERIES = 1000;
/** The label value that stands for anything outside a closed set. */
export const OTHER = "OTHER";

/** Label values by label name. */
export type Labels<T extends string> = Partial<Record<T, string | number>>;

/** Something a {@linkcode Registry} can render. */
export interface Metric {
  /** Metric name. */
  readonly name: string;
  /** The exposition lines (HELP, TYPE and samples), without a trailing newline. */
  render(): Promise<string>;
}

/** Options shared by every metric type. */
export interface MetricOptions<T extends string, M = unknown> {
  /** Metric name, e.g. `mipserver_http_requests_total`. */
  name: string;
  /** One line of help text. */
  help: string;
  /** Label names, in the order they are written. */
  labelNames?: readonly T[];
  /** Registries to register with. */
  registers?: Registry[];
  /** Called before each render, with `this` the metric: fill it from elsewhere (e.g. `this.reset(); this.inc(...)`). */
  collect?: (this: M) => void | Promise<void>;
}

/** Escapes a HELP text. */
function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** Escapes a label value. */
function escapeValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** A sample value as Prometheus writes it. */
export function formatValue(value: number): string {
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  if (Number.isNaN(value)) return "NaN";
  return String(value);
}

/** `{a="1",b="2"}` for label pairs, or the empty string. */
export function formatLabels(pairs: [string, string | number][]): string {
  if (pairs.length === 0) return "";
  return `{${pairs.map(([k, v]) => `${k}="${escapeValue(String(v))}"`).join(",")}}`;
}

/** Base of the labelled metrics: a bounded map from label values to a series. */
abstract class LabelledMetric<T extends string, S> implements Metric {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly T[];
  abstract readonly type: string;
  #collect?: () => void | Promise<void>;
  protected series = new Map<string, { values: string[]; data: S }>();

  constructor(options: MetricOptions<T, never>) {
    this.name = options.name;
    this.help = options.help;
    this.labelNames = options.labelNames ?? [];
    this.#collect = options.collect as (() => void | Promise<void>) | undefined;
    for (const registry of options.registers ?? []) registry.registerMetric(this);
  }

  /** Drops every series. */
  reset(): void {
    this.series.clear();
  }

  protected abstract fresh(): S;

  /** The series for `labels`, created if new; past {@linkcode MAX_SERIES} every label value becomes `OTHER`. */
  protected at(labels: Labels<T> = {}): S {
    let values = this.labelNames.map((n) => String(labels[n] ?? ""));
    let key = values.join("\u0000");
    let entry = this.series.get(key);
    if (entry) return entry.data;
    if (this.series.size >= MAX_SERIES) {
      values = this.labelNames.map(() => OTHER);
      key = values.join("\u0000");
      entry = this.series.get(key);
      if (entry) return entry.data;
    }
    entry = { values, data: this.fresh() };
    this.series.set(key, entry);
    return entry.data;
  }

  protected pairs(values: string[]): [string, string][] {
    return this.labelNames.map((n, i) => [n, values[i]]);
  }

  protected abstract samples(): string[];

  async render(): Promise<string> {
    if (this.#collect) await this.#collect.call(this);
    if (this.labelNames.length === 0 && this.series.size === 0) this.at();
    const head = [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`];
    return [...head, ...this.samples()].join("\n");
  }
}

/** Base of counters and gauges: one number per label set. */
abstract class ValueMetric<T extends string> extends LabelledMetric<T, { v: number }> {
  protected fresh() {
    return { v: 0 };
  }

  /** Adds `n` to the series for `labels`; `inc(5)` style calls pass the amount as `labels`. */
  protected add(labels: Labels<T> | number | undefined, n: number, sign = 1): void {
    if (typeof labels === "number") this.at({}).v += sign * labels;
    else this.at(labels).v += sign * n;
  }

  protected samples(): string[] {
    return [...this.series.values()].map(({ values, data }) =>
      `${this.name}${formatLabels(this.pairs(values))} ${formatValue(data.v)}`
    );
  }
}

/** A value per label set that only goes up. */
export class Counter<T extends string = string> extends ValueMetric<T> {
  readonly type = "counter";

  constructor(options: MetricOptions<T, Counter<T>>) {
    super(options as MetricOptions<T, never>);
  }

  /** Adds `n` (default 1) to the series for `labels`. */
  inc(labels?: Labels<T> | number, n = 1): void {
    if (!((typeof labels === "number" ? labels : n) >= 0)) throw new RangeError("A counter can only go up");
    this.add(labels, n);
  }
}

/** A value per label set that can be set, raised and lowered. */
export class Gauge<T extends string = string> extends ValueMetric<T> {
  readonly type = "gauge";

  constructor(options: MetricOptions<T, Gauge<T>>) {
    super(options as MetricOptions<T, never>);
  }

  /** Sets the series for `labels` to `value`. */
  set(labels: Labels<T> | number, value?: number): void {
    if (typeof labels === "number") [labels, value] = [{}, labels];
    this.at(labels).v = value ?? 0;
  }

  /** Adds `n` (default 1, may be negative). */
  inc(labels?: Labels<T> | number, n = 1): void {
    this.add(labels, n);
  }

  /** Subtracts `n` (default 1). */
  dec(labels?: Labels<T> | number, n = 1): void {
    this.add(labels, n, -1);
  }
}

/** Options of a {@linkcode Histogram}. */
export interface HistogramOptions<T extends string> extends MetricOptions<T, Histogram<T>> {
  /** Upper bounds of the buckets, ascending (`+Inf` is added). */
  buckets: number[];
}

/** Observations per label set, counted in buckets, with their sum and count. */
export class Histogram<T extends string = string>
  extends LabelledMetric<T, { counts: number[]; sum: number; count: number }> {
  readonly type = "histogram";
  readonly buckets: number[];

  constructor(options: HistogramOptions<T>) {
    super(options as MetricOptions<T, never>);
    this.buckets = [...options.buckets].sort((a, b) => a - b);
  }

  protected fresh() {
    return { counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 };
  }

  /** Counts one observation of `value` in the series for `labels`. */
  observe(labels: Labels<T> | number, value?: number): void {
    if (typeof labels === "number") [labels, value] = [{}, labels];
    const v = value ?? 0;
    const s = this.at(labels);
    const i = this.buckets.findIndex((b) => v <= b);
    if (i >= 0) s.counts[i]++;
    s.sum += v;
    s.count++;
  }

  protected samples(): string[] {
    const lines: string[] = [];
    for (const { values, data } of this.series.values()) {
      const pairs = this.pairs(values);
      let cumulative = 0;
      this.buckets.forEach((b, i) => {
        cumulative += data.counts[i];
        lines.push(`${this.name}_bucket${formatLabels([...pairs, ["le", formatValue(b)]])} ${cumulative}`);
      });
      lines.push(`${this.name}_bucket${formatLabels([...pairs, ["le", "+Inf"]])} ${data.count}`);
      lines.push(`${this.name}_sum${formatLabels(pairs)} ${formatValue(data.sum)}`);
      lines.push(`${this.name}_count${formatLabels(pairs)} ${data.count}`);
    }
    return lines;
  }
}

/** The metrics one `/metrics` page shows, in registration order. */
export class Registry {
  /** The exposition format's content type. */
  readonly contentType = "text/plain; version=0.0.4; charset=utf-8";
  #metrics = new Map<string, Metric>();

  /** Adds `metric`; a second metric of the same name is an error. */
  registerMetric(metric: Metric): void {
    if (this.#metrics.has(metric.name)) throw new Error(`A metric named ${metric.name} is already registered`);
    this.#metrics.set(metric.name, metric);
  }

  /** The metric named `name`, if registered. */
  getSingleMetric(name: string): Metric | undefined {
    return this.#metrics.get(name);
  }

  /** The exposition text of every metric. */
  async metrics(): Promise<string> {
    const parts: string[] = [];
    for (const metric of this.#metrics.values()) parts.push(await metric.render());
    return parts.join("\n\n") + "\n";
  }
}
