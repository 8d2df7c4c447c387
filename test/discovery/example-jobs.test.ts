import test from 'ava';
import { readdir } from 'node:fs/promises';
import { allocationInstance } from '../../agent/discovery/allocation-instance.js';
import { instanceConfigFor, type InstanceConfigResult } from '../../agent/discovery/instance-config.js';
import { allocationSchema } from '../../agent/nomad/nomad-schemas.js';
import { NomadDouble } from '../doubles/nomad/nomad-double.js';
import { runJob } from '../plugin/run-job-command.js';

/*
 * Every example in jobs/ as a user runs it: `doze job render` (offline), the
 * allocation Nomad would place for each group (the double shapes it as the
 * API does), then discovery's mapping and the instance config on a node
 * whose kernel lookups found the task's cgroup and veth. Each is managed, or
 * says why not: refused by `doze job validate`, or named by it and reported
 * with the same reason at discovery.
 */

type Verdict = 'managed' | 'registered by its doze vm owner' | 'not doze\'s' | 'refused by the agent';

/** What each example must come to (a new example must be added here, or the test fails). */
const EXPECTED: Record<string, Verdict> = {
  'web-pause.nomad.hcl': 'managed',
  'web-reclaim.nomad.hcl': 'managed',
  'vm-pause.nomad.hcl': 'managed',
  'vm-snapshot.nomad.hcl': 'registered by its doze vm owner',
  'doze-agent.nomad.hcl': 'not doze\'s',
  'batch-scale.nomad.hcl': 'refused by the agent',
};

test('every example job renders, becomes the allocation Nomad would place, and is managed by discovery or refused with the reason validate gives', async (t) => {
  const files = (await readdir('jobs')).filter((f) => f.endsWith('.nomad.hcl')).sort();
  t.deepEqual(files, Object.keys(EXPECTED).sort(), 'every example has an expected verdict');
  const nomad = await NomadDouble.start();
  t.teardown(() => nomad.close());
  for (const file of files) {
    const validate = await runJob(['validate', `jobs/${file}`]);
    t.is(validate.code, 0, `${file}: ${validate.stderr}`);
    const render = await runJob(['render', `jobs/${file}`]);
    t.is(render.code, 0, `${file}: ${render.stderr}`);
    const job = (JSON.parse(render.stdout) as { Job: Record<string, unknown> }).Job;
    nomad.registerJob(job);
    const verdicts: Verdict[] = [];
    for (const group of job.TaskGroups as Array<{ Name: string }>) {
      const alloc = allocationSchema.parse(nomad.addAllocation({ jobId: String(job.ID), group: group.Name, namespace: String(job.Namespace ?? 'default') }));
      const mapping = allocationInstance(alloc);
      if (mapping.kind === 'ignored') {
        verdicts.push('not doze\'s');
        continue;
      }
      if (mapping.kind === 'invalid') {
        t.fail(`${file}: group ${group.Name}: validate passed it, discovery refuses it: ${mapping.reason}`);
        continue;
      }
      if (mapping.instance.vmOwner) {
        verdicts.push('registered by its doze vm owner');
        continue;
      }
      // The node facts discovery finds for the task (agent/docker/ for docker, Nomad's layout otherwise).
      const cgroup = mapping.instance.driver === 'docker'
        ? { version: 1 as const, path: `/sys/fs/cgroup/freezer/docker/${'c'.repeat(64)}` }
        : { version: 1 as const, path: `/sys/fs/cgroup/freezer/nomad/${alloc.ID}.${mapping.instance.task}` };
      const result: InstanceConfigResult = instanceConfigFor(mapping.instance, { ...(mapping.instance.networkMode === 'bridge' ? { interface: 'veth0a1b2c3d' } : {}), cgroup });
      if (result.kind === 'config') {
        verdicts.push('managed');
        t.log(`${file}: group ${group.Name}: ${mapping.instance.driver} task ${mapping.instance.task} → ${result.config.runtime.kind} at ${result.config.address}`);
      } else {
        verdicts.push('refused by the agent');
        // Whatever the agent refuses, validate has said so first.
        const reasonStart = result.reason.split(' (')[0]!.split(':')[0]!;
        t.true(validate.stdout.includes(reasonStart) || validate.stderr.includes(reasonStart), `${file}: the agent refuses it (${result.reason}), and validate says: ${validate.stdout}${validate.stderr}`);
      }
    }
    t.true(verdicts.length > 0 && verdicts.every((v) => v === EXPECTED[file]), `${file}: ${verdicts.join(', ')}`);
  }
});
