import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { EXIT } from '../agent/cli/exit-codes.js';
import { formatDuration } from '../agent/config/duration.js';
import { BUSY_CPU_DEFAULT } from '../agent/config/schema.js';
import { NomadClient, NomadError } from '../agent/nomad/nomad-client.js';
import type { WakeMode } from '../agent/nomad/meta-keys.js';
import { DozeError, messageOf } from '../agent/shared/errors.js';
import { checkJob, type JobCheck } from './check-job.js';
import { loadJobspec } from './load-jobspec.js';
import { prepareJob } from './prepare-job.js';
import { DEFAULT_VM_RENDER, renderVmTasks, type VmRender } from './render-vm-task.js';

const CONNECTION_OPTIONS = `Nomad options (each falls back to Nomad's own environment variable):
      --nomad-addr URL      Nomad HTTP API (NOMAD_ADDR); without it HCL is parsed offline
      --token TOKEN         ACL token, sent as X-Nomad-Token (NOMAD_TOKEN)
      --namespace NS        (NOMAD_NAMESPACE)
      --region REGION       (NOMAD_REGION)
      --ca-cert FILE        CA certificate for https (NOMAD_CACERT)
      --client-cert FILE    client certificate (NOMAD_CLIENT_CERT)
      --client-key FILE     client key (NOMAD_CLIENT_KEY)
      --offline             never call Nomad to parse, even with NOMAD_ADDR set
      --var NAME=VALUE      an HCL variable for Nomad's parser (repeatable; NOMAD_VAR_NAME too)
      --var-file FILE       a file of HCL variable values for Nomad's parser (repeatable)
      --agent-url URL       the node agent as a task reaches it, for qemu tasks rendered into
                            doze vm run (default ${DEFAULT_VM_RENDER.agentUrl})
  -h, --help                show this help`;

const EXITS = 'Exit codes: 0 ok, 1 invalid job (or Nomad rejected it), 2 usage or connection error.';

export const JOB_HELP = `Usage: doze job validate|render|run FILE [options]

Prepares Nomad jobs annotated with doze.* meta. FILE is HCL (parsed by Nomad's
/v1/jobs/parse when a Nomad address is given, else offline) or JSON (API JSON
with or without the outer "Job", or HCL's JSON syntax).

Commands:
  validate   check the job and its doze.* meta; print what doze will manage
  render     print the prepared job as API JSON ({"Job": …})
  run        register the prepared job with Nomad (POST /v1/jobs)

Preparing adds the constraint \${meta.doze.agent} = "true" to every group doze
manages, so its allocations land on nodes that run the agent, turns each
qemu task with doze.mode = "snapshot" into a raw_exec task that runs it under
"doze vm run", and gives each qemu task with doze.mode = "pause" a QMP socket
and (with doze.reclaim) file-backed guest RAM through its args (docs/qemu.md).

${CONNECTION_OPTIONS}

${EXITS}`;

const SUBCOMMAND_HELP: Record<string, string> = {
  validate: `Usage: doze job validate FILE [options]

Checks the job's structure and doze.* meta (names the place and value of each
problem) and that each managed group has a service with a check and a port.
Prints what doze will manage.

${CONNECTION_OPTIONS}

${EXITS}`,
  render: `Usage: doze job render FILE [options]

Validates the job, then prints it as Nomad API JSON ({"Job": …}) with doze's
additions, ready for \`nomad job run -json\` or POST /v1/jobs.

${CONNECTION_OPTIONS}

${EXITS}`,
  run: `Usage: doze job run FILE --nomad-addr URL [options]

Validates and prepares the job, then registers it with Nomad (POST /v1/jobs)
and prints the evaluation id. Needs a Nomad address.

${CONNECTION_OPTIONS}

${EXITS}`,
};

export interface JobCommandIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
}

const defaultIo: JobCommandIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  env: process.env,
};

/** `doze job …`: argv excludes "job". Returns the exit code. */
export async function jobCommand(argv: string[], io: JobCommandIo = defaultIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        'nomad-addr': { type: 'string' },
        token: { type: 'string' },
        namespace: { type: 'string' },
        region: { type: 'string' },
        'ca-cert': { type: 'string' },
        'client-cert': { type: 'string' },
        'client-key': { type: 'string' },
        offline: { type: 'boolean' },
        var: { type: 'string', multiple: true },
        'var-file': { type: 'string', multiple: true },
        'agent-url': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (error) {
    io.stderr(`doze job: ${messageOf(error)}\n\n${JOB_HELP}\n`);
    return EXIT.usage;
  }
  const { values, positionals } = parsed;
  const [sub, file, ...extra] = positionals;
  if (values.help || sub === 'help') {
    io.stdout(`${(sub && SUBCOMMAND_HELP[sub]) || JOB_HELP}\n`);
    return EXIT.ok;
  }
  const usage = (message: string) => {
    io.stderr(`doze job${sub ? ` ${sub}` : ''}: ${message}\n\n${(sub && SUBCOMMAND_HELP[sub]) || JOB_HELP}\n`);
    return EXIT.usage;
  };
  if (!sub) return usage('missing command (validate, render or run)');
  if (!SUBCOMMAND_HELP[sub]) return usage(`unknown command ${JSON.stringify(sub)}`);
  if (!file) return usage('missing FILE');
  if (extra.length > 0) return usage(`unexpected argument ${JSON.stringify(extra[0])}`);

  const env = io.env;
  const address = values.offline ? undefined : values['nomad-addr'] ?? (env.NOMAD_ADDR || undefined);
  if (sub === 'run' && values.offline) return usage('--offline cannot register a job: run needs Nomad');
  if (sub === 'run' && !address) return usage('run needs a Nomad address (--nomad-addr or NOMAD_ADDR)');
  const prefix = `doze job ${sub}`;

  let nomad: NomadClient | undefined;
  try {
    nomad = address
      ? new NomadClient({
          address,
          token: values.token ?? (env.NOMAD_TOKEN || undefined),
          namespace: values.namespace ?? (env.NOMAD_NAMESPACE || undefined),
          region: values.region ?? (env.NOMAD_REGION || undefined),
          tls: {
            caFile: values['ca-cert'] ?? (env.NOMAD_CACERT || undefined),
            certFile: values['client-cert'] ?? (env.NOMAD_CLIENT_CERT || undefined),
            keyFile: values['client-key'] ?? (env.NOMAD_CLIENT_KEY || undefined),
            serverName: env.NOMAD_TLS_SERVER_NAME || undefined,
          },
        })
      : undefined;
  } catch (error) {
    return usage(messageOf(error));
  }

  let variables: string | undefined;
  try {
    variables = await jobVariables(values.var ?? [], values['var-file'] ?? [], env);
  } catch (error) {
    return usage(messageOf(error));
  }
  if (variables !== undefined && !nomad && (values.var?.length || values['var-file']?.length)) {
    return usage('--var and --var-file need Nomad\'s parser (--nomad-addr or NOMAD_ADDR): the offline parser does not evaluate variables');
  }

  let loaded;
  try {
    loaded = await loadJobspec(file, nomad, variables);
  } catch (error) {
    if (error instanceof DozeError && error.code === 'E_JOB_PARSE') {
      io.stderr(`${prefix}: ${file} is not a valid jobspec:\n  ${error.message.replace(/\n/g, '\n  ')}\n`);
      return EXIT.failure;
    }
    io.stderr(`${prefix}: ${messageOf(error)}\n`);
    return EXIT.usage;
  }

  const check = checkJob(loaded.job);
  if (check.problems.length > 0 || !check.job) {
    io.stderr(`${prefix}: ${file} is invalid:\n${check.problems.map((p) => `  ${p}\n`).join('')}`);
    return EXIT.failure;
  }
  const agentUrl = values['agent-url'] ?? DEFAULT_VM_RENDER.agentUrl;
  if (!/^https?:\/\/[^/\s]+\/?$/.test(agentUrl)) return usage(`--agent-url ${JSON.stringify(agentUrl)}: expected a URL such as ${DEFAULT_VM_RENDER.agentUrl}`);
  const vm = renderVmTasks(loaded.job, check, { ...DEFAULT_VM_RENDER, agentUrl });
  if (vm.problems.length > 0) {
    io.stderr(`${prefix}: ${file} is invalid:\n${vm.problems.map((p) => `  ${p}\n`).join('')}`);
    return EXIT.failure;
  }
  // Warnings only for a valid job: next to problems they are noise.
  for (const warning of [...check.warnings, ...vm.warnings]) io.stderr(`warning: ${warning}\n`);
  const prepared = prepareJob(vm.job, check);

  if (sub === 'validate') {
    io.stdout(summary(check, loaded.parsedBy, vm));
    return EXIT.ok;
  }
  if (sub === 'render') {
    io.stdout(`${JSON.stringify({ Job: prepared }, null, 2)}\n`);
    return EXIT.ok;
  }
  try {
    const result = await nomad!.registerJob(prepared);
    io.stdout(`registered job ${JSON.stringify(check.job.ID)}: evaluation ${result.EvalID}\n`);
    if (result.Warnings) io.stderr(`warning: Nomad: ${result.Warnings.trim()}\n`);
    return EXIT.ok;
  } catch (error) {
    // Nomad reports a job it refuses (validation, ACL-free policy checks) as 400 or 500.
    if (error instanceof NomadError && error.code === 'E_NOMAD_HTTP' && (error.status === 400 || error.status === 500)) {
      io.stderr(`${prefix}: Nomad rejected job ${JSON.stringify(check.job.ID)}: ${error.message}\n`);
      return EXIT.failure;
    }
    io.stderr(`${prefix}: ${messageOf(error)}\n`);
    return EXIT.usage;
  }
}

/**
 * The wake mode the agent will use. Unset, a VM under doze vm run (snapshot, no
 * pre-spawned QEMU) drops the first SYN while asleep, so it holds: a retry would cost
 * the client's 1 s retransmission (agent/detector/managed-instance.ts, `wake`).
 */
export function wakeSummary(wake: WakeMode | undefined, snapshotVm: boolean): string {
  if (wake !== undefined) return `wake ${wake}`;
  return snapshotVm
    ? 'wake hold (the default for a snapshot VM: its first SYN is lost while QEMU is gone and a retry would cost the client 1 s; doze.wake = "retry" keeps retry)'
    : 'wake retry';
}

function summary(check: JobCheck, parsedBy: string, { rendered, qemuPause }: Pick<VmRender, 'rendered' | 'qemuPause'>): string {
  const lines = [`job ${JSON.stringify(check.job!.ID)} is valid (parsed ${parsedBy === 'nomad' ? 'by Nomad' : parsedBy === 'offline' ? 'offline' : 'as JSON'})`];
  for (const group of check.groups) {
    const m = group.managed;
    if (!m) {
      lines.push(`  group ${JSON.stringify(group.name)}: not managed by doze`);
      continue;
    }
    const s = m.settings;
    const vm = rendered.find((r) => r.group === group.name);
    const extras = [
      s.minAwakeMs > 0 ? `min_awake ${formatDuration(s.minAwakeMs)}` : '',
      s.maxAwakeMs !== undefined ? `max_awake ${formatDuration(s.maxAwakeMs)}` : '',
      s.maxSleepMs !== undefined ? `max_sleep ${formatDuration(s.maxSleepMs)}` : '',
      s.busyCpu === 0 ? 'busy guard off' : s.busyCpu !== BUSY_CPU_DEFAULT ? `busy above ${s.busyCpu} of a core` : '',
    ].filter(Boolean);
    lines.push(
      `  group ${JSON.stringify(group.name)}: doze ${s.mode}, task ${JSON.stringify(m.task)}, service ${JSON.stringify(m.service.name)} on port ${JSON.stringify(m.service.portLabel)} (${m.networkMode} network), ` +
        `idle after ${formatDuration(s.idleTimeoutMs)} (${s.idlePolicy}), ${wakeSummary(s.wake, vm !== undefined)}${extras.length ? `, ${extras.join(', ')}` : ''}`,
    );
    if (vm) lines.push(`    task ${JSON.stringify(vm.task)} runs under doze vm run (raw_exec), tap ${JSON.stringify(vm.tap)}, guest port ${vm.guestPort}`);
    const paused = qemuPause.find((r) => r.group === group.name);
    if (paused) {
      const ram = paused.ram ? `guest RAM (${paused.ram.memoryMb} MiB) in ${paused.ram.file}` : 'guest RAM kept in memory (doze.reclaim off)';
      lines.push(`    task ${JSON.stringify(paused.task)} (qemu driver) gets QMP socket ${paused.qmp} and ${ram}, in its task directory`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/**
 * The `Variables` of POST /v1/jobs/parse: "the content of a variables file"
 * (api/jobs.go JobsParseRequest), so var files are concatenated and each
 * --var NAME=VALUE (and NOMAD_VAR_NAME, as Nomad's CLI reads them) becomes
 * `NAME = "VALUE"`. Undefined when there are none.
 */
export async function jobVariables(vars: string[], files: string[], env: Record<string, string | undefined>): Promise<string | undefined> {
  const parts: string[] = [];
  for (const file of files) {
    try {
      parts.push(await readFile(file, 'utf8'));
    } catch (error) {
      throw new DozeError('E_USAGE', `cannot read --var-file ${file}: ${(error as NodeJS.ErrnoException).code ?? messageOf(error)}`, { cause: error });
    }
  }
  const assign = (name: string, value: string) => `${name} = ${JSON.stringify(value)}`;
  for (const [key, value] of Object.entries(env)) if (key.startsWith('NOMAD_VAR_') && value !== undefined && key.length > 10) parts.push(assign(key.slice(10), value));
  for (const entry of vars) {
    const split = entry.indexOf('=');
    const name = split > 0 ? entry.slice(0, split) : '';
    if (!/^[A-Za-z_][A-Za-z0-9_-]*$/.test(name)) throw new DozeError('E_USAGE', `--var ${JSON.stringify(entry)}: expected NAME=VALUE`);
    parts.push(assign(name, entry.slice(split + 1)));
  }
  return parts.length ? `${parts.join('\n')}\n` : undefined;
}
