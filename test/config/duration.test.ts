import test from 'ava';
import fc from 'fast-check';
import { DURATION_TEXT, formatDuration, parseDuration } from '../../agent/config/duration.js';

test('parses Nomad-style durations', (t) => {
  t.is(parseDuration('500ms'), 500);
  t.is(parseDuration('30s'), 30_000);
  t.is(parseDuration('1.5s'), 1500);
  t.is(parseDuration('5m'), 300_000);
  t.is(parseDuration('1h30m'), 5_400_000);
});

test('rejects what is not a duration', (t) => {
  for (const bad of ['', '5', '5 parsecs', 'ms', '10x', '-1s', '1s junk', '1d']) t.is(parseDuration(bad), undefined, bad);
});

test('formats for people', (t) => {
  t.is(formatDuration(250), '250ms');
  t.is(formatDuration(1500), '1.5s');
  t.is(formatDuration(90_000), '1m30s');
});

test('DURATION_TEXT, the pattern the config schema checks first, accepts exactly what parseDuration parses', (t) => {
  const pieces = fc.array(fc.constantFrom('1', '05', '1.5', '.5', 'ms', 's', 'm', 'h', 'd', ' ', '-', 'x'), { maxLength: 8 }).map((parts) => parts.join(''));
  fc.assert(fc.property(pieces, (text) => DURATION_TEXT.test(text) === (parseDuration(text) !== undefined)));
  t.pass();
});
