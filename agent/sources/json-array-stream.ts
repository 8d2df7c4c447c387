/**
 * Splits a streamed top-level JSON array (`[{…},{…}` with no newlines, as
 * `bpftool -j batch` and `bpftool -j map event_pipe` write it) into its
 * elements as they complete. Strings and escapes are respected.
 *
 * bpftool writes an element's closing brace only when the next element
 * starts. With `lastKeys`, an element is emitted as soon as a nested value
 * closes and the text so far, closed with "}", is an object holding one of
 * those keys (the key bpftool always writes last).
 */
export class JsonArrayStream {
  private emittedEarly = false;
  private buffer = '';
  private depth = 0;
  private inString = false;
  private escaped = false;
  private start = -1;
  private scanned = 0;

  constructor(
    private readonly onValue: (value: unknown) => void,
    private readonly onError: (error: Error) => void = () => {},
    private readonly lastKeys: readonly string[] = [],
  ) {}

  push(chunk: string): void {
    this.buffer += chunk;
    const text = this.buffer;
    for (let i = this.scanned; i < text.length; i++) {
      const ch = text[i];
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (ch === '\\') this.escaped = true;
        else if (ch === '"') this.inString = false;
        continue;
      }
      if (ch === '"') {
        this.inString = true;
      } else if (ch === '{' || ch === '[') {
        if (this.depth === 1) {
          this.start = i;
          this.emittedEarly = false;
        }
        this.depth++;
      } else if (ch === '}' || ch === ']') {
        this.depth--;
        if (this.depth === 2 && this.start >= 0 && !this.emittedEarly && this.lastKeys.length > 0) {
          this.tryEarly(text.slice(this.start, i + 1));
        } else if (this.depth === 1 && this.start >= 0) {
          if (!this.emittedEarly) this.emit(text.slice(this.start, i + 1));
          this.emittedEarly = false;
          this.start = -1;
        } else if (this.depth < 0) {
          this.depth = 0; // tolerate a stray closer between runs
        }
      }
    }
    // Keep only the unfinished element so the buffer stays small.
    if (this.start >= 0) {
      this.buffer = text.slice(this.start);
      this.scanned = this.buffer.length;
      this.start = 0;
    } else {
      this.buffer = '';
      this.scanned = 0;
    }
  }

  /** A new process run begins a new array. */
  reset(): void {
    this.buffer = '';
    this.depth = 0;
    this.inString = false;
    this.escaped = false;
    this.start = -1;
    this.scanned = 0;
    this.emittedEarly = false;
  }

  private tryEarly(partial: string): void {
    let value: unknown;
    try {
      value = JSON.parse(`${partial}}`);
    } catch {
      return; // not the last key yet
    }
    if (value && typeof value === 'object' && this.lastKeys.some((key) => key in value)) {
      this.emittedEarly = true;
      this.onValue(value);
    }
  }

  private emit(text: string): void {
    try {
      this.onValue(JSON.parse(text));
    } catch (error) {
      this.onError(error as Error);
    }
  }
}
