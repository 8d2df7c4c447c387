import test from 'ava';
import { analyzeGroup } from '../../agent/nomad/managed-group.js';
import { jobSchema } from '../../agent/nomad/nomad-schemas.js';
import { webJob } from '../doubles/nomad/fixtures.js';

function unnamed(level: 'group' | 'task') {
  const raw = webJob({ groupMeta: { 'doze.enabled': 'true' } });
  const group = (raw.TaskGroups as Array<Record<string, unknown>>)[0]!;
  const service = { ...(group.Services as Array<Record<string, unknown>>)[0]!, Name: '' };
  if (level === 'group') group.Services = [service];
  else {
    group.Services = null;
    (group.Tasks as Array<Record<string, unknown>>)[0]!.Services = [service];
  }
  const job = jobSchema.parse(raw);
  return analyzeGroup(job, job.TaskGroups[0]!);
}

test('an unnamed service gets Nomad\'s default name: ${job}-${group} for a group service, ${job}-${group}-${task} for a task service (api/services.go)', (t) => {
  t.is(unnamed('group').managed?.service.name, 'web-web');
  t.is(unnamed('task').managed?.service.name, 'web-web-app');
});

test('a script check that Nomad would exec into the managed task makes the group unmanaged, with the reason; one in another task does not', (t) => {
  const raw = webJob({ groupMeta: { 'doze.enabled': 'true' } });
  const group = (raw.TaskGroups as Array<Record<string, unknown>>)[0]!;
  const service = (group.Services as Array<{ Checks: Array<Record<string, unknown>> }>)[0]!;
  service.Checks.push({ Name: 'db-ping', Type: 'script', Command: '/bin/check', TaskName: 'app', Interval: 10_000_000_000, Timeout: 2_000_000_000 });
  const job = jobSchema.parse(raw);
  const analysis = analyzeGroup(job, job.TaskGroups[0]!);
  t.is(analysis.managed, undefined);
  t.regex(analysis.problems.join('\n'), /group "web": script check "db-ping" of service "web" runs inside task "app", which doze would freeze: Nomad execs a script check into the task every interval.*doze does not manage this group/);

  // The same check run in a sidecar task: Nomad runs it there, unfrozen.
  service.Checks[1]!.TaskName = 'sidecar';
  (group.Tasks as Array<Record<string, unknown>>).push({ Name: 'sidecar', Driver: 'exec', Lifecycle: { Hook: 'poststart', Sidecar: true }, Meta: null });
  const withSidecar = jobSchema.parse(raw);
  t.truthy(analyzeGroup(withSidecar, withSidecar.TaskGroups[0]!).managed);
});
