/** A test client of the edge: one raw connection that reads whole responses, one at a time. */
const enc = new TextEncoder();
const dec = new TextDecoder();

/** A client connection that reads one whole response at a time (Content-Length bodies, none for HEAD). */
export class Client {
  #buf = new Uint8Array(0);
  private constructor(readonly conn: Deno.TcpConn) {}
  static async open(port: number): Promise<Client> {
    return new Client(await Deno.connect({ hostname: "127.0.0.1", port }));
  }
  async send(text: string): Promise<void> {
    const bytes = enc.encode(text);
    for (let at = 0; at < bytes.length;) at += await this.conn.write(bytes.subarray(at));
  }
  async #more(): Promise<boolean> {
    const chunk = new Uint8Array(65536);
    const n = await this.conn.read(chunk);
    if (n === null) return false;
    const joined = new Uint8Array(this.#buf.length + n);
    joined.set(this.#buf);
    joined.set(chunk.subarray(0, n), this.#buf.length);
    this.#buf = joined;
    return true;
  }
  /** The next response: its head as text and its body; undefined when the server closed instead. */
  async response(head = false): Promise<{ head: string; body: string } | undefined> {
    let end: number;
    try {
      while ((end = dec.decode(this.#buf).indexOf("\r\n\r\n")) < 0) if (!(await this.#more())) return undefined;
    } catch (e) {
      // A server that closed with unread bytes resets the connection: closed all the same.
      if (e instanceof Deno.errors.ConnectionReset || e instanceof Deno.errors.BrokenPipe) return undefined;
      throw e;
    }
    const headText = dec.decode(this.#buf.subarray(0, end));
    const length = head || / 304 /.test(headText.split("\r\n")[0])
      ? 0
      : Number(/\r\ncontent-length: (\d+)/i.exec(headText)?.[1] ?? 0);
    while (this.#buf.length < end + 4 + length) if (!(await this.#more())) throw new Error("body cut short");
    const body = dec.decode(this.#buf.subarray(end + 4, end + 4 + length));
    this.#buf = this.#buf.slice(end + 4 + length);
    return { head: headText, body };
  }
  /** Whether the server closes the connection (with nothing more to read) within `ms`. */
  async closedWithin(ms: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    const closed = this.#more().then((more) => !more, () => true);
    const result = await Promise.race([closed, late]);
    clearTimeout(timer);
    return result;
  }
  close(): void {
    try {
      this.conn.close();
    } catch { /* closed */ }
  }
}
