import test from 'ava';
import { decideIdle, isOpen, isRequestInFlight, type IdleInputs } from '../../agent/detector/idle-decision.js';
import { describeHold } from '../../agent/detector/reasons.js';
import { ConnFlag, type Connection } from '../../agent/sources/bpf-records.js';

const MS = 1_000_000n;
const base: IdleInputs = { nowNs: 10_000n * MS, lastActivityNs: 9_000n * MS, idleTimeoutMs: 500, minAwakeUntilNs: 0n, maxAwakeMs: undefined, policy: 'requests' };

function conn(overrides: Partial<Connection>): Connection {
  return { clientAddr: '10.0.0.1', instanceAddr: '10.0.0.2', clientPort: 40000, instancePort: 80, lastNs: 0n, clientPayloadNs: 0n, serverPayloadNs: 0n, flags: 0, ...overrides };
}

test('recent traffic: active until the idle deadline', (t) => {
  t.deepEqual(decideIdle({ ...base, lastActivityNs: 9_800n * MS }), { kind: 'active', recheckAtNs: 10_300n * MS });
});

test('minimum awake time holds an instance past its idle deadline', (t) => {
  t.deepEqual(decideIdle({ ...base, minAwakeUntilNs: 12_000n * MS }), { kind: 'active', recheckAtNs: 12_000n * MS });
});

test('traffic policy: idle on packets alone', (t) => {
  t.is(decideIdle({ ...base, policy: 'traffic' }).kind, 'idle');
});

test('requests policy: asks for connections, then holds for a request in flight', (t) => {
  t.is(decideIdle(base).kind, 'needs-connections');
  const slow = conn({ clientPayloadNs: 8_000n * MS, serverPayloadNs: 7_000n * MS });
  const verdict = decideIdle(base, [slow]);
  t.is(verdict.kind, 'held');
  t.regex(verdict.kind === 'held' ? describeHold(verdict.reason) : '', /1 request\(s\) in flight/);
});

test('requests policy: an idle keep-alive connection does not hold', (t) => {
  const keepAlive = conn({ clientPayloadNs: 7_000n * MS, serverPayloadNs: 7_001n * MS });
  t.is(decideIdle(base, [keepAlive]).kind, 'idle');
});

test('connections policy: any open connection holds; closed ones do not', (t) => {
  const open = conn({ clientPayloadNs: 7_000n * MS, serverPayloadNs: 7_001n * MS });
  t.is(decideIdle({ ...base, policy: 'connections' }, [open]).kind, 'held');
  const closed = conn({ flags: ConnFlag.finClient | ConnFlag.finServer });
  t.is(decideIdle({ ...base, policy: 'connections' }, [closed]).kind, 'idle');
});

test('health-check connections never hold, under any policy', (t) => {
  const check = conn({ clientPayloadNs: 8_000n * MS, flags: ConnFlag.check });
  t.false(isRequestInFlight(check));
  t.false(isOpen(check));
  t.is(decideIdle({ ...base, policy: 'connections' }, [check]).kind, 'idle');
});

test('max_awake bounds how long a stuck request holds the instance', (t) => {
  const stuck = conn({ clientPayloadNs: 1_000n * MS });
  t.is(decideIdle({ ...base, lastActivityNs: 1_000n * MS, maxAwakeMs: 5000 }, [stuck]).kind, 'idle');
  t.is(decideIdle({ ...base, lastActivityNs: 1_000n * MS, maxAwakeMs: 60_000 }, [stuck]).kind, 'held');
});

test('a server FIN ends a request (a reset one leaves the map: test/agent/closed-connections.test.ts)', (t) => {
  t.false(isRequestInFlight(conn({ clientPayloadNs: 2n, flags: ConnFlag.finServer })));
  t.true(isRequestInFlight(conn({ clientPayloadNs: 2n, flags: ConnFlag.finClient })), 'a client half-close still awaits its answer');
});

test('a response waiting on a client that reads slowly (its window closed) is in flight, under requests and connections', (t) => {
  // The instance answered last, so by payloads alone the request looks done; the closed window says the rest waits.
  const slowReader = conn({ clientPayloadNs: 7_000n * MS, serverPayloadNs: 7_001n * MS, flags: ConnFlag.clientWindowClosed });
  t.true(isRequestInFlight(slowReader));
  for (const policy of ['requests', 'connections'] as const) {
    const verdict = decideIdle({ ...base, policy }, [slowReader]);
    t.is(verdict.kind, 'held', policy);
    t.regex(verdict.kind === 'held' ? describeHold(verdict.reason) : '', /1 request\(s\) in flight/, policy);
  }
  t.false(isRequestInFlight(conn({ ...slowReader, flags: 0 })), 'the window open again: answered');
});

test('max_awake bounds a response stalled on a closed window; a server FIN or a check connection is not held by one', (t) => {
  const stalled = conn({ clientPayloadNs: 1_000n * MS, serverPayloadNs: 1_001n * MS, flags: ConnFlag.clientWindowClosed });
  t.is(decideIdle({ ...base, lastActivityNs: 1_000n * MS, maxAwakeMs: 5000 }, [stalled]).kind, 'idle');
  t.false(isRequestInFlight({ ...stalled, flags: ConnFlag.clientWindowClosed | ConnFlag.finServer }), 'the instance handed over all of it');
  t.false(isRequestInFlight({ ...stalled, flags: ConnFlag.clientWindowClosed | ConnFlag.check }));
});
