/**
 * Splits a stream of top-level JSON objects into parsed values. Nomad's event
 * stream is documented as newline-delimited, but its encoder writes each
 * frame (and the `{}` heartbeat) as a bare object, so frames are found by
 * brace depth rather than by newlines; both framings work. Strings and
 * escapes are respected, whitespace between values is ignored.
 */
export class JsonValueSplitter {
  private buffer = '';
  private scanned = 0;
  private depth = 0;
  private inString = false;
  private escaped = false;

  constructor(
    private readonly onValue: (value: unknown, text: string) => void,
    private readonly onMalformed: (text: string, error: Error) => void,
    /** A frame larger than this is a broken stream, not a big allocation. */
    private readonly maxChars = 64 * 1024 * 1024,
  ) {}

  push(chunk: string): void {
    this.buffer += chunk;
    const text = this.buffer;
    let start = 0;
    let resume = -1;
    for (let i = this.scanned; i < text.length; i++) {
      const ch = text[i]!;
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (ch === '\\') this.escaped = true;
        else if (ch === '"') this.inString = false;
        continue;
      }
      if (this.depth === 0 && ch !== '{' && ch !== '[' && !/\s/.test(ch)) {
        // Text outside any value (a bare word, a stray closer): drop it up to the next newline.
        const end = text.indexOf('\n', i);
        if (end < 0) {
          resume = i;
          break;
        }
        this.onMalformed(text.slice(i, end), new Error('text outside a JSON object'));
        start = end + 1;
        i = end;
        continue;
      }
      if (ch === '"') this.inString = true;
      else if (ch === '{' || ch === '[') this.depth++;
      else if (ch === '}' || ch === ']') {
        this.depth--;
        if (this.depth === 0) {
          this.emit(text.slice(start, i + 1).trim());
          start = i + 1;
        }
      }
    }
    this.buffer = text.slice(start);
    // Re-scan unfinished garbage next time; everything else was scanned already.
    this.scanned = resume >= 0 ? resume - start : this.buffer.length;
    if (this.depth === 0 && resume < 0 && this.buffer.trim() === '') {
      this.buffer = '';
      this.scanned = 0;
    }
    if (this.buffer.length > this.maxChars) {
      const dropped = this.buffer;
      this.reset();
      this.onMalformed(dropped.slice(0, 200), new Error(`a frame exceeded ${this.maxChars} characters`));
    }
  }

  /** Forget a partial value, e.g. after the connection it came from dropped. */
  reset(): void {
    this.buffer = '';
    this.scanned = 0;
    this.depth = 0;
    this.inString = false;
    this.escaped = false;
  }

  private emit(text: string): void {
    try {
      this.onValue(JSON.parse(text), text);
    } catch (error) {
      this.onMalformed(text.slice(0, 200), error as Error);
    }
  }
}
