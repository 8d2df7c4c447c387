import test from 'ava';
import { JsonArrayStream } from '../../agent/sources/json-array-stream.js';

test('splits a streamed array into elements across arbitrary chunk boundaries', (t) => {
  const text = '[{"a":1,"s":"}{,\\"]"},{"b":[1,2,{"c":3}]},{"d":null}]';
  for (let size = 1; size <= text.length; size++) {
    const seen: unknown[] = [];
    const stream = new JsonArrayStream((v) => seen.push(v));
    for (let i = 0; i < text.length; i += size) stream.push(text.slice(i, i + size));
    t.deepEqual(seen, [{ a: 1, s: '}{,"]' }, { b: [1, 2, { c: 3 }] }, { d: null }], `chunk size ${size}`);
  }
});

test('with lastKeys, an element is emitted before bpftool writes its closing brace', (t) => {
  const seen: unknown[] = [];
  const stream = new JsonArrayStream((v) => seen.push(v), () => {}, ['data']);
  stream.push('[{"type":9,"cpu":1,"data":[10,213,0,2]');
  t.deepEqual(seen, [{ type: 9, cpu: 1, data: [10, 213, 0, 2] }]);
  stream.push('},{"type":9,"data":[1]');
  t.is(seen.length, 2, 'the late brace does not emit the first element twice');
});

test('a malformed element is reported, not thrown', (t) => {
  const errors: Error[] = [];
  const stream = new JsonArrayStream(() => {}, (e) => errors.push(e));
  stream.push('[{"a":tru}]');
  t.is(errors.length, 1);
});
