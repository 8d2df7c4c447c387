import test from 'ava';
import { nomadStopKind, stopKind } from '../../agent/cli/stop-kind.js';
import { createLogger } from '../../agent/shared/log.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';
import { closedPort } from '../helpers/http.js';

/*
 * Which stop a signal asks for (agent/cli/stop-kind.ts): a hand-over leaves
 * sleepers asleep for a successor, a final stop wakes them. Under Nomad the
 * agent asks Nomad whether a newer version of its job replaces it.
 */

const log = createLogger('silent');
const agentJob = () => ({ ID: 'doze-agent', Type: 'system', TaskGroups: [{ Name: 'agent', Tasks: [{ Name: 'agent', Driver: 'raw_exec' }] }] });

test('signals: SIGUSR2 hands over, SIGINT stops for good, SIGTERM hands over only with --handover outside Nomad', async (t) => {
  const context = { handoverFlag: false, config: {}, env: {}, log };
  t.is(await stopKind('SIGUSR2', context), 'handover');
  t.is(await stopKind('SIGINT', { ...context, handoverFlag: true }), 'final');
  t.is(await stopKind('SIGTERM', context), 'final');
  t.is(await stopKind('SIGTERM', { ...context, handoverFlag: true }), 'handover');
});

test('the decision: a newer version of a live job is a hand-over; a stopped, purged or unchanged job is final', (t) => {
  t.is(nomadStopKind({ Version: 3 }, 2), 'handover');
  t.is(nomadStopKind({ Version: 3, Stop: true }, 2), 'final', 'nomad job stop makes a new version too');
  t.is(nomadStopKind(undefined, 2), 'final', 'purged');
  t.is(nomadStopKind({ Version: 2 }, 2), 'final', 'a drain, or the node no longer matches');
  t.is(nomadStopKind({}, 2), 'final');
});

test('under Nomad, SIGTERM asks it: a rolling update (the job re-registered) hands over, nomad job stop is final', async (t) => {
  const nomad = await startNomadDouble(t, { acl: { agent: ['read-job', 'node:read', 'agent:read'] } });
  nomad.registerJob(agentJob());
  const alloc = nomad.addAllocation({ jobId: 'doze-agent', group: 'agent', nodeId: 'node-1' });
  const context = { handoverFlag: false, config: { nomad: { address: nomad.url, token: 'agent', cgroupRoot: '/sys/fs/cgroup' } }, env: { NOMAD_ALLOC_ID: alloc.ID as string, NOMAD_NAMESPACE: 'default' }, log };
  t.is(await stopKind('SIGTERM', context), 'final', 'the same version: no successor is coming');
  nomad.registerJob({ ...agentJob(), Meta: { release: 'next' } });
  t.is(await stopKind('SIGTERM', context), 'handover', 'version 1 replaces the allocation of version 0');
  nomad.stopJob('doze-agent');
  t.is(await stopKind('SIGTERM', context), 'final', 'nomad job stop');
  t.is(await stopKind('SIGTERM', { ...context, config: { nomad: { ...context.config.nomad, token: 'nobody' } } }), 'final', 'a refusal is a final stop');
});

test('Nomad unreachable: a final stop, decided within the 2 s it is given', async (t) => {
  const port = await closedPort();
  const started = performance.now();
  const kind = await stopKind('SIGTERM', { handoverFlag: false, config: { nomad: { address: `http://127.0.0.1:${port}`, cgroupRoot: '/sys/fs/cgroup' } }, env: { NOMAD_ALLOC_ID: 'a' }, log });
  t.is(kind, 'final');
  t.true(performance.now() - started < 3000);
});
