import test from 'ava';
import { analyzeGroup } from '../../agent/discovery/managed-group.js';
import { jobSchema } from '../../agent/discovery/nomad-schemas.js';
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
