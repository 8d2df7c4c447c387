const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const PIECE_TEXT = String.raw`(\d+(?:\.\d+)?)(ms|s|m|h)`;
const PIECE = new RegExp(PIECE_TEXT, 'g');

/** A whole duration as text, what parseDuration accepts: a schema checks it (and shows it as its pattern) before parsing. */
export const DURATION_TEXT = new RegExp(String.raw`^\s*(?:${PIECE_TEXT})+\s*$`);

/** Parses Go-style durations as Nomad writes them ("500ms", "30s", "1h30m"); returns milliseconds, or undefined when malformed. */
export function parseDuration(text: string): number | undefined {
  const trimmed = text.trim();
  let total = 0;
  let consumed = '';
  for (const match of trimmed.matchAll(PIECE)) {
    consumed += match[0];
    total += Number(match[1]) * UNITS[match[2]!]!;
  }
  if (consumed === '' || consumed !== trimmed || !Number.isFinite(total)) return undefined;
  return Math.round(total);
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(1))}s`;
  if (ms < 3_600_000) return `${Math.floor(ms / 60_000)}m${Math.round((ms % 60_000) / 1000)}s`;
  return `${Math.floor(ms / 3_600_000)}h${Math.floor((ms % 3_600_000) / 60_000)}m`;
}
