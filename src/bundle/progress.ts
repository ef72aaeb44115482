/**
 * Progress for long commands: a bar redrawn in place on a terminal, plain lines otherwise (logs, CI, pipes).
 * @module
 */

/** Where progress goes. */
export interface ProgressSink {
  /** Whether the sink is a terminal (a bar is drawn) or not (one line per finished step). */
  terminal: boolean;
  write(text: string): void;
}

/** The standard error stream as a progress sink. */
export function stderrSink(): ProgressSink {
  const enc = new TextEncoder();
  return { terminal: Deno.stderr.isTerminal(), write: (text) => Deno.stderr.writeSync(enc.encode(text)) };
}

const WIDTH = 30;

/** Counts steps of a known total. */
export class Progress {
  #done = 0;
  #sink: ProgressSink;
  #total: number;
  #label: string;

  constructor(sink: ProgressSink, total: number, label: string) {
    this.#sink = sink;
    this.#total = total;
    this.#label = label;
  }

  /** One step finished: `what` with its outcome (`ok` or a short failure). */
  step(what: string, outcome: string): void {
    this.#done++;
    if (!this.#sink.terminal) {
      this.#sink.write(`${this.#label} ${this.#done}/${this.#total} ${what}: ${outcome}\n`);
      return;
    }
    const filled = this.#total ? Math.round((this.#done / this.#total) * WIDTH) : WIDTH;
    const bar = "#".repeat(filled) + "-".repeat(WIDTH - filled);
    const text = `${this.#label} [${bar}] ${this.#done}/${this.#total} ${what}`.slice(0, 100);
    this.#sink.write(`\r\x1b[K${text}`);
  }

  /** Ends the bar's line (on a terminal). */
  end(): void {
    if (this.#sink.terminal) this.#sink.write("\n");
  }
}
