import test from 'ava';
import { JsonValueSplitter } from '../../agent/discovery/json-value-splitter.js';

function split(chunks: string[]) {
  const values: unknown[] = [];
  const bad: string[] = [];
  const splitter = new JsonValueSplitter(
    (value) => values.push(value),
    (text) => bad.push(text),
  );
  for (const chunk of chunks) splitter.push(chunk);
  return { values, bad };
}

test('newline-delimited and back-to-back objects both split', (t) => {
  t.deepEqual(split(['{"a":1}\n{}\n{"b":[1,{"c":2}]}\n']).values, [{ a: 1 }, {}, { b: [1, { c: 2 }] }]);
  t.deepEqual(split(['{"a":1}{}{"b":2}']).values, [{ a: 1 }, {}, { b: 2 }]);
});

test('a value cut anywhere across chunks, braces in strings included, comes out whole', (t) => {
  const text = '{"Index":5,"Events":[{"Key":"a}{\\"b","Payload":{"x":"]["}}]}\n{}\n';
  for (let cut = 1; cut < text.length; cut++) {
    const { values, bad } = split([text.slice(0, cut), text.slice(cut)]);
    t.deepEqual(bad, [], `cut at ${cut}`);
    t.deepEqual(values, [{ Index: 5, Events: [{ Key: 'a}{"b', Payload: { x: '][' } }] }, {}], `cut at ${cut}`);
  }
});

test('garbage lines and broken objects are reported, later values survive', (t) => {
  const { values, bad } = split(['oops\n{"a":', '1,}\n', '{"ok":true}\nstray', ' words\n{"z":0}']);
  t.deepEqual(values, [{ ok: true }, { z: 0 }]);
  t.deepEqual(bad, ['oops', '{"a":1,}', 'stray words']);
});

test('an endless value is cut off at the size limit', (t) => {
  const bad: string[] = [];
  const splitter = new JsonValueSplitter(() => t.fail(), (_text, error) => bad.push(error.message), 1000);
  splitter.push(`{"a":"${'x'.repeat(2000)}`);
  t.deepEqual(bad, ['a frame exceeded 1000 characters']);
});
