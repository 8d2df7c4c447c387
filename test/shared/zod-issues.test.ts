import test from 'ava';
import { z } from 'zod';
import { describeIssues, fieldPath, summarizeIssues } from '../../agent/shared/zod-issues.js';

const schema = z.strictObject({
  instances: z.array(z.strictObject({ id: z.string(), idleTimeout: z.number().optional(), token: z.string().optional() })),
});

function issuesOf(input: unknown) {
  const parsed = schema.safeParse(input);
  if (parsed.success) throw new Error('expected issues');
  return parsed.error;
}

test('a path is spelt as zod spells it: indexes in brackets, odd keys quoted', (t) => {
  t.is(fieldPath(['instances', 0, 'runtime', 'kind']), 'instances[0].runtime.kind');
  t.is(fieldPath(['Meta', 'doze.enabled']), 'Meta["doze.enabled"]');
  t.is(fieldPath([]), '(top level)');
});

test('the multi-line form names the field and what was found, never a token, and the key meant', (t) => {
  const input = { instances: [{ id: 7, token: 42, idleTimout: 5 }] };
  const text = describeIssues(issuesOf(input).issues, input, schema);
  t.regex(text, /^ {2}instances\[0\]\.id: Invalid input: expected string, received number \(got 7\)$/m);
  t.regex(text, /^ {2}instances\[0\]\.token: Invalid input: expected string, received number$/m, 'a token is never echoed');
  t.regex(text, /^ {2}instances\[0\]: unknown key "idleTimout" \(did you mean "idleTimeout"\?\)$/m);
});

test('the one-line form lists the first three issues and counts the rest', (t) => {
  const error = issuesOf({ instances: [{}, {}, {}, {}, {}] });
  t.is(
    summarizeIssues(error),
    'instances[0].id: Invalid input: expected string, received undefined; instances[1].id: Invalid input: expected string, received undefined; instances[2].id: Invalid input: expected string, received undefined; …and 2 more',
  );
  t.is(summarizeIssues(issuesOf([])), '(top level): Invalid input: expected object, received array');
});
