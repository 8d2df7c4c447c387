import { z } from 'zod';
import { nearestName } from './nearest-name.js';
import { knownKeysAt } from './known-keys.js';

/*
 * zod issues as text, the one way every caller writes them. zod's own z.prettifyError names the
 * path but neither the value it found nor a key the user probably meant, spends two lines per
 * issue and reorders them; a config error here must name the field, what was found and the fix on
 * one line. The path itself is spelt by zod (z.core.toDotPath): `instances[0].runtime.kind`.
 */

type Issue = z.core.$ZodIssue;

/** "instances[0].runtime.kind"; "(top level)" for the root. */
export function fieldPath(path: readonly PropertyKey[]): string {
  return z.core.toDotPath(path) || '(top level)';
}

/** The value at `path` of `input`, undefined when the path leaves it. */
export function valueAt(input: unknown, path: readonly PropertyKey[]): unknown {
  let current = input;
  for (const key of path) {
    if (current === null || typeof current !== 'object') return undefined;
    current = (current as Record<PropertyKey, unknown>)[key];
  }
  return current;
}

const SHOWN_MAX = 80;

/** A bad value as JSON, cut at a word or field boundary when long (never mid-word). */
export function shownValue(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  if (text.length <= SHOWN_MAX) return text;
  const cut = text.slice(0, SHOWN_MAX);
  const boundary = Math.max(cut.lastIndexOf(','), cut.lastIndexOf(' '));
  return `${cut.slice(0, boundary > SHOWN_MAX / 2 ? boundary : SHOWN_MAX)} …`;
}

/** Tokens are never echoed into an error (it may end up in a log). */
const isSecret = (path: readonly PropertyKey[]) => path.at(-1) === 'token';

/** "unknown key "idleTimout" (did you mean "idleTimeout"?)": the nearest key the schema declares there. */
function unknownKeys(keys: string[], known: string[]): string {
  return keys
    .map((key) => {
      const guess = nearestName(key, known);
      return `unknown key ${JSON.stringify(key)}${guess ? ` (did you mean ${JSON.stringify(guess)}?)` : known.length > 0 ? ` (known here: ${known.join(', ')})` : ''}`;
    })
    .join('; ');
}

export interface IssueNaming {
  /** The schema that validated the input: an unknown key gets the nearest declared one as a suggestion. */
  schema?: z.core.$ZodType;
  /** Names the field instead of its path: the flag or variable that set it. */
  field?: string;
}

/** `instances[0].idleTimeout: "5 parsecs" is not a duration (…) (got "5 parsecs")`: one issue, the value found included. */
export function describeIssue(issue: Issue, input: unknown, naming: IssueNaming = {}): string {
  const where = naming.field ?? fieldPath(issue.path);
  if (issue.code === 'unrecognized_keys') {
    // The path names the object; echoing all of it would hide the key that is wrong.
    return `${where}: ${unknownKeys(issue.keys, naming.schema ? knownKeysAt(naming.schema, issue.path, input) : [])}`;
  }
  const bad = valueAt(input, issue.path);
  const shown = bad === undefined || isSecret(issue.path) ? '' : ` (got ${shownValue(bad)})`;
  return `${where}: ${issue.message}${shown}`;
}

/**
 * One indented line per problem, to go under a header ("config is invalid:"): the field, the bad
 * value, and what was expected. With the `schema` that validated `input`, an unknown key also gets
 * the nearest declared one as a suggestion.
 */
export function describeIssues(issues: readonly Issue[], input: unknown, schema?: z.core.$ZodType): string {
  return issues.map((issue) => `  ${describeIssue(issue, input, { schema })}`).join('\n');
}

const SUMMARIZED_MAX = 3;

/**
 * "[0].ClientStatus: Invalid input: expected string, received undefined; …and 2 more": the first
 * few issues on one line, for an error about an answer or a file doze did not write by hand (a
 * peer's API body, a runtime handle), where the values are not the reader's to fix.
 */
export function summarizeIssues(error: { readonly issues: readonly Issue[] }, limit = SUMMARIZED_MAX): string {
  const lines = error.issues.slice(0, limit).map((issue) => `${fieldPath(issue.path)}: ${issue.message}`);
  if (error.issues.length > limit) lines.push(`…and ${error.issues.length - limit} more`);
  return lines.join('; ');
}
