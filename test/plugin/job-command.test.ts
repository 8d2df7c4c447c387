import { readdir, readFile } from 'node:fs/promises';
import test from 'ava';
import { JOB_HELP } from '../../plugin/job-command.js';
import { webJob } from '../doubles/nomad/fixtures.js';
import { startNomadDouble } from '../doubles/nomad/with-double.js';
import { jobFile, runJob } from './run-job-command.js';
import { closedPort } from '../helpers/http.js';

const enabled = { 'doze.enabled': 'true' };

const WEB_HCL = `job "web" {
  meta = {
    "doze.enabled" = "true"
  }
  group "web" {
    meta = {
      "doze.idle_timeout" = "45s"
    }
    network {
      mode = "bridge"
      port "http" {
        to = 8080
      }
    }
    service {
      name = "web"
      port = "http"
      check {
        type     = "http"
        path     = "/"
        interval = "10s"
        timeout  = "2s"
      }
    }
    task "app" {
      driver = "docker"
      config {
        image = "nginx:1.27"
      }
    }
  }
}
`;

test('every example in jobs/ validates offline', async (t) => {
  const files = (await readdir('jobs')).filter((f) => f.endsWith('.nomad.hcl'));
  t.true(files.length >= 4, files.join(', '));
  for (const file of files) {
    const run = await runJob(['validate', `jobs/${file}`]);
    t.is(run.code, 0, `${file}: ${run.stderr}`);
    t.regex(run.stdout, /is valid \(parsed offline\)/, file);
  }
});

test('validate summarises what doze will manage', async (t) => {
  const file = await jobFile(t, 'web.nomad.hcl', WEB_HCL);
  const run = await runJob(['validate', file]);
  t.is(run.code, 0, run.stderr);
  t.is(run.stdout, 'job "web" is valid (parsed offline)\n  group "web": doze pause, task "app", service "web" on port "http" (bridge network), idle after 45s (requests), wake retry\n');
  t.is(run.stderr, '');
});

test('render prints the API job with the agent constraint on managed groups only', async (t) => {
  const job = webJob({ groupMeta: enabled });
  const other = structuredClone((job.TaskGroups as object[])[0]!) as Record<string, unknown>;
  other.Name = 'admin';
  other.Meta = { 'doze.enabled': 'false' };
  (job.TaskGroups as object[]).push(other);
  const file = await jobFile(t, 'web.json', { Job: job });
  const run = await runJob(['render', file]);
  t.is(run.code, 0, run.stderr);
  const rendered = JSON.parse(run.stdout) as { Job: { TaskGroups: { Name: string; Constraints?: unknown }[] } };
  const [web, admin] = rendered.Job.TaskGroups;
  t.deepEqual(web!.Constraints, [{ LTarget: '${meta.doze.agent}', RTarget: 'true', Operand: '=' }]);
  t.is(admin!.Constraints, undefined);
  // Rendering twice adds nothing twice.
  const again = await runJob(['render', await jobFile(t, 'again.json', rendered)]);
  t.deepEqual(JSON.parse(again.stdout), rendered);
});

test('render converts HCL offline into Nomad API JSON', async (t) => {
  const file = await jobFile(t, 'web.nomad.hcl', WEB_HCL);
  const run = await runJob(['render', file]);
  t.is(run.code, 0, run.stderr);
  const { Job: job } = JSON.parse(run.stdout);
  t.is(job.ID, 'web');
  t.deepEqual(job.Meta, { 'doze.enabled': 'true' });
  const group = job.TaskGroups[0];
  t.deepEqual(group.Networks, [{ Mode: 'bridge', DynamicPorts: [{ Label: 'http', Value: 0, To: 8080 }] }]);
  t.deepEqual(group.Services[0].Checks[0], { Type: 'http', Path: '/', Interval: 10_000_000_000, Timeout: 2_000_000_000 });
  t.is(group.Services[0].PortLabel, 'http');
  t.deepEqual(group.Tasks[0].Config, { image: 'nginx:1.27' });
});

/** Annotation sets: [name, change to webJob(), exit code, message on stderr]. */
const table: [string, Parameters<typeof webJob>[0], number, RegExp][] = [
  ['enabled at job level', { jobMeta: enabled }, 0, /^$/],
  ['every key valid', { groupMeta: { ...enabled, 'doze.idle_timeout': '1m', 'doze.idle_policy': 'connections', 'doze.mode': 'snapshot', 'doze.wake': 'hold', 'doze.min_awake': '10s', 'doze.max_awake': '1h', 'doze.max_sleep': '24h' } }, 0, /^$/],
  ['host network', { groupMeta: enabled, networkMode: 'host' }, 0, /^$/],
  ['not a duration', { groupMeta: { ...enabled, 'doze.idle_timeout': '5 parsecs' } }, 1, /^ {2}group "web": doze\.idle_timeout: "5 parsecs" is not a duration/m],
  ['bad policy at job level', { jobMeta: { ...enabled, 'doze.idle_policy': 'vibes' } }, 1, /job "web": doze\.idle_policy: "vibes" is not one of requests, connections, traffic/],
  ['bad mode on the task', { groupMeta: enabled, taskMeta: { 'doze.mode': 'hibernate' } }, 1, /group "web" task "app": doze\.mode: "hibernate" is not one of snapshot, pause, scale/],
  ['misspelt key', { groupMeta: { ...enabled, 'doze.idle_timout': '1m' } }, 1, /group "web": doze\.idle_timout: unknown doze meta key \(did you mean doze\.idle_timeout\?\)/],
  ['typo in an unmanaged job', { jobMeta: { 'doze.enable': 'true' } }, 1, /job "web": doze\.enable: unknown doze meta key \(did you mean doze\.enabled\?\)/],
  ['max_awake below idle_timeout', { groupMeta: { ...enabled, 'doze.idle_timeout': '10m', 'doze.max_awake': '1m' } }, 1, /doze\.max_awake: "1m" is shorter than doze\.idle_timeout/],
  ['no check', { groupMeta: enabled, check: false }, 1, /group "web": doze needs a service with a check and a port: service "web" has no check/],
  ['no port', { groupMeta: enabled, port: false }, 1, /service "web" has no port/],
  ['no service', { groupMeta: enabled, service: false }, 1, /group "web": doze needs a service with a check and a port to reach the task, and the group has no service/],
  ['scale in a batch job', { type: 'batch', groupMeta: { ...enabled, 'doze.mode': 'scale' } }, 1, /doze\.mode: "scale" needs a service job; job "web" is a batch job/],
  ['scale with min 1', { scalingMin: 1, groupMeta: { ...enabled, 'doze.mode': 'scale' } }, 1, /its scaling block has min = 1: set min = 0/],
  ['scale with min 0', { scalingMin: 0, groupMeta: { ...enabled, 'doze.mode': 'scale' } }, 0, /warning: group "web": doze\.mode "scale": .*hashicorp\/nomad#19731/],
];

for (const [name, options, code, message] of table) {
  test(`validate: ${name} → exit ${code}`, async (t) => {
    const file = await jobFile(t, 'job.json', { Job: webJob(options) });
    const run = await runJob(['validate', file]);
    t.is(run.code, code, run.stderr);
    t.regex(run.stderr, message);
    if (code === 1) t.regex(run.stderr, /^doze job validate: .*job\.json is invalid:\n/);
  });
}

test('a job that is not doze\'s validates with a hint', async (t) => {
  const run = await runJob(['validate', await jobFile(t, 'plain.json', webJob())]);
  t.is(run.code, 0);
  t.regex(run.stderr, /warning: job "web": no group is managed by doze/);
  t.regex(run.stdout, /group "web": not managed by doze/);
});

test('structural problems name the group and task', async (t) => {
  const job = webJob({ groupMeta: enabled }) as { TaskGroups: { Tasks: Record<string, unknown>[] }[] };
  delete job.TaskGroups[0]!.Tasks[0]!.Driver;
  const run = await runJob(['validate', await jobFile(t, 'job.json', job)]);
  t.is(run.code, 1);
  t.regex(run.stderr, /group "web" task "app": Driver: Invalid input: expected string, received undefined/);
});

test('two main tasks that both resolve enabled are ambiguous', async (t) => {
  const job = webJob({ groupMeta: enabled }) as { TaskGroups: { Tasks: Record<string, unknown>[] }[] };
  job.TaskGroups[0]!.Tasks.push({ ...job.TaskGroups[0]!.Tasks[0]!, Name: 'worker' });
  const run = await runJob(['validate', await jobFile(t, 'job.json', job)]);
  t.is(run.code, 1);
  t.regex(run.stderr, /group "web": doze manages one task per group, but "app" and "worker" all resolve doze\.enabled = true/);
  job.TaskGroups[0]!.Tasks[1]!.Meta = { 'doze.enabled': 'false' };
  t.is((await runJob(['validate', await jobFile(t, 'job2.json', job)])).code, 0);
});

test('HCL syntax errors exit 1 with the parser\'s position', async (t) => {
  const file = await jobFile(t, 'broken.nomad.hcl', 'job "web" {\n  group "web" {\n    count = \n  }\n');
  const run = await runJob(['validate', file]);
  t.is(run.code, 1);
  t.regex(run.stderr, /broken\.nomad\.hcl is not a valid jobspec:\n {2}.*broken\.nomad\.hcl:\d+,\d+/);
});

test('usage errors exit 2', async (t) => {
  t.is((await runJob([])).code, 2);
  t.is((await runJob(['frobnicate', 'x.hcl'])).code, 2);
  t.is((await runJob(['validate'])).code, 2);
  t.is((await runJob(['validate', 'a.hcl', 'b.hcl'])).code, 2);
  t.is((await runJob(['validate', 'x.hcl', '--bogus'])).code, 2);
  const missing = await runJob(['validate', '/nonexistent/job.nomad.hcl']);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /cannot read \/nonexistent\/job\.nomad\.hcl: ENOENT/);
  const noAddress = await runJob(['run', 'jobs/web-pause.nomad.hcl']);
  t.is(noAddress.code, 2);
  t.regex(noAddress.stderr, /run needs a Nomad address \(--nomad-addr or NOMAD_ADDR\)/);
  const badAddress = await runJob(['validate', 'jobs/web-pause.nomad.hcl', '--nomad-addr', 'localhost:4646']);
  t.is(badAddress.code, 2);
  t.regex(badAddress.stderr, /is not an http\(s\) URL/);
});

test('--help on the command and each subcommand', async (t) => {
  const top = await runJob(['--help']);
  t.is(top.code, 0);
  t.is(top.stdout, `${JOB_HELP}\n`);
  for (const sub of ['validate', 'render', 'run']) {
    const run = await runJob([sub, '--help']);
    t.is(run.code, 0, sub);
    t.true(run.stdout.startsWith(`Usage: doze job ${sub} FILE`), sub);
    t.regex(run.stdout, /Exit codes: 0 ok, 1 invalid job/);
  }
});

test('with a Nomad address, HCL is parsed by Nomad (/v1/jobs/parse)', async (t) => {
  const nomad = await startNomadDouble(t);
  const file = await jobFile(t, 'web.nomad.hcl', WEB_HCL);
  const run = await runJob(['validate', file], { NOMAD_ADDR: nomad.url });
  t.is(run.code, 0, run.stderr);
  t.regex(run.stdout, /is valid \(parsed by Nomad\)/);
  const parse = nomad.requests.find((r) => r.path === '/v1/jobs/parse')!;
  t.deepEqual(JSON.parse(parse.body), { JobHCL: WEB_HCL, Canonicalize: true });
  // --offline keeps Nomad out of it even with NOMAD_ADDR set.
  const offline = await runJob(['validate', file, '--offline'], { NOMAD_ADDR: nomad.url });
  t.regex(offline.stdout, /parsed offline/);
  t.is(nomad.requests.filter((r) => r.path === '/v1/jobs/parse').length, 1);
});

test('--var, --var-file and NOMAD_VAR_* reach Nomad\'s parser as Variables; offline they are a usage error', async (t) => {
  const nomad = await startNomadDouble(t);
  const file = await jobFile(t, 'web.nomad.hcl', WEB_HCL);
  const vars = await jobFile(t, 'prod.vars.hcl', 'image = "app:2"\n');
  const run = await runJob(['validate', file, '--var', 'count=3', '--var-file', vars], { NOMAD_ADDR: nomad.url, NOMAD_VAR_region: 'eu "west"' });
  t.is(run.code, 0, run.stderr);
  const parse = JSON.parse(nomad.requests.find((r) => r.path === '/v1/jobs/parse')!.body) as Record<string, unknown>;
  t.is(parse.Variables, 'image = "app:2"\n\nregion = "eu \\"west\\""\ncount = "3"\n');
  const offline = await runJob(['validate', file, '--offline', '--var', 'count=3']);
  t.is(offline.code, 2);
  t.regex(offline.stderr, /--var and --var-file need Nomad's parser/);
  t.is((await runJob(['validate', file, '--var', 'nonsense'], { NOMAD_ADDR: nomad.url })).code, 2);
});

test('Nomad\'s parse errors are job errors (exit 1)', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.injectOnce('POST', '/v1/jobs/parse', { status: 400, body: 'input.hcl:3,5-10: Unsupported argument; An argument named "cout" is not expected here.' });
  const run = await runJob(['validate', await jobFile(t, 'web.nomad.hcl', WEB_HCL), '--nomad-addr', nomad.url]);
  t.is(run.code, 1);
  t.regex(run.stderr, /not a valid jobspec:\n {2}Nomad: input\.hcl:3,5-10: Unsupported argument/);
});

test('run registers the prepared job with Nomad', async (t) => {
  const nomad = await startNomadDouble(t, { token: 'tok' });
  const file = await jobFile(t, 'web.nomad.hcl', WEB_HCL);
  const run = await runJob(['run', file, '--nomad-addr', nomad.url], { NOMAD_TOKEN: 'tok', NOMAD_NAMESPACE: 'default' });
  t.is(run.code, 0, run.stderr);
  t.regex(run.stdout, /^registered job "web": evaluation [0-9a-f-]{36}\n$/);
  const register = nomad.requests.find((r) => r.path === '/v1/jobs')!;
  t.is(register.method, 'POST');
  t.is(register.headers['x-nomad-token'], 'tok');
  t.is(register.query.get('namespace'), 'default');
  const stored = nomad.getJob('web') as { TaskGroups: { Constraints: unknown[] }[] };
  t.deepEqual(stored.TaskGroups[0]!.Constraints, [{ LTarget: '${meta.doze.agent}', RTarget: 'true', Operand: '=' }]);
});

test('run does not register an invalid job', async (t) => {
  const nomad = await startNomadDouble(t);
  const file = await jobFile(t, 'job.json', { Job: webJob({ groupMeta: { ...enabled, 'doze.wake': 'later' } }) });
  const run = await runJob(['run', file, '--nomad-addr', nomad.url]);
  t.is(run.code, 1);
  t.regex(run.stderr, /doze\.wake: "later" is not one of retry, hold/);
  t.is(nomad.requests.filter((r) => r.path === '/v1/jobs').length, 0);
});

test('a job Nomad rejects exits 1 with Nomad\'s reason', async (t) => {
  const nomad = await startNomadDouble(t);
  nomad.injectOnce('POST', '/v1/jobs', { status: 500, body: '1 error occurred:\n\t* Task group web validation failed: Missing tasks for task group\n\n' });
  const file = await jobFile(t, 'job.json', { Job: webJob({ groupMeta: enabled }) });
  const run = await runJob(['run', file, '--nomad-addr', nomad.url]);
  t.is(run.code, 1);
  t.regex(run.stderr, /Nomad rejected job "web": .*HTTP 500: 1 error occurred:/s);
});

test('connection and permission problems exit 2', async (t) => {
  const file = await jobFile(t, 'job.json', { Job: webJob({ groupMeta: enabled }) });
  const port = await closedPort();
  const down = await runJob(['run', file, '--nomad-addr', `http://127.0.0.1:${port}`]);
  t.is(down.code, 2);
  t.regex(down.stderr, new RegExp(`Nomad at http://127.0.0.1:${port} is unreachable \\(POST /v1/jobs\\)`));
  const hclDown = await runJob(['validate', await jobFile(t, 'web.nomad.hcl', WEB_HCL)], { NOMAD_ADDR: `http://127.0.0.1:${port}` });
  t.is(hclDown.code, 2);
  const nomad = await startNomadDouble(t, { token: 'right' });
  const denied = await runJob(['run', file, '--nomad-addr', nomad.url, '--token', 'wrong']);
  t.is(denied.code, 2);
  t.regex(denied.stderr, /HTTP 403: Permission denied/);
});

test('validate explains memory oversubscription when a group with reclaim reserves its full awake memory', async (t) => {
  const reclaiming = WEB_HCL.replace('"doze.idle_timeout" = "45s"', '"doze.idle_timeout" = "45s"\n      "doze.reclaim" = "true"').replace('image = "nginx:1.27"\n      }', 'image = "nginx:1.27"\n      }\n      resources {\n        memory = 512\n      }');
  const full = await runJob(['validate', await jobFile(t, 'full.nomad.hcl', reclaiming)]);
  t.is(full.code, 0, full.stderr);
  t.regex(full.stderr, /warning: group "web" task "app": doze.reclaim frees its memory while it sleeps, but Nomad places allocations by their reserved memory \(resources.memory = 512 MiB\)[\s\S]*memory_max = 512/);
  const oversubscribed = reclaiming.replace('memory = 512', 'memory = 20\n        memory_max = 512');
  const ok = await runJob(['validate', await jobFile(t, 'ok.nomad.hcl', oversubscribed)]);
  t.is(ok.code, 0, ok.stderr);
  t.notRegex(ok.stderr, /oversubscription/);
  // Without doze.reclaim nothing is said: a plain freezer sleep frees no memory.
  t.notRegex((await runJob(['validate', await jobFile(t, 'plain.nomad.hcl', WEB_HCL.replace('image = "nginx:1.27"\n      }', 'image = "nginx:1.27"\n      }\n      resources {\n        memory = 512\n      }'))])).stderr, /oversubscription/);
});

test('validate says a snapshot VM without doze.wake wakes by hold, and keeps an explicit retry', async (t) => {
  const example = await readFile('jobs/vm-snapshot.nomad.hcl', 'utf8');
  t.regex(example, /"doze\.wake"\s*=\s*"hold"/);
  const unset = await jobFile(t, 'vm.nomad.hcl', example.replace(/^.*"doze\.wake".*$/m, ''));
  const run = await runJob(['validate', unset]);
  t.is(run.code, 0, run.stderr);
  t.regex(run.stdout, /doze snapshot, .*wake hold \(the default for a snapshot VM: its first SYN is lost while QEMU is gone/);
  const retry = await jobFile(t, 'vm-retry.nomad.hcl', example.replace(/("doze\.wake"\s*=\s*)"hold"/, '$1"retry"'));
  t.regex((await runJob(['validate', retry])).stdout, /doze snapshot, .*wake retry(,|\n)/);
});
