import test from 'ava';
import { missing, testIf } from '../helpers/needs.js';

// Not a test of doze: scripts/run-tests.mjs is run on this file by run-tests.test.ts (it is no
// *.test.ts, so a full run leaves it out). One of each line the runner must tell apart.

test('passes', (t) => t.pass());
test.todo('is still to be written');
test.skip('is skipped by hand, with no need', (t) => t.pass());
testIf(missing('cni', () => 'the fixture always lacks it'))('needs the CNI plugins', (t) => {
  t.pass();
});
