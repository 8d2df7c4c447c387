#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { agentCommand } from './agent/cli/agent-command.js';
import { configCommand } from './agent/cli/config-command.js';
import { EXIT } from './agent/cli/exit-codes.js';
import { statusCommand } from './agent/cli/status-command.js';
import { vmCommand } from './agent/cli/vm-command.js';
import { jobCommand } from './plugin/job-command.js';

const HELP = `Usage: doze COMMAND [options]

Scale-to-zero for Nomad + Consul: idle allocations sleep, traffic wakes them.

Commands:
  agent    run the node agent (doze agent --help)
  status   show what a running agent manages (doze status --help)
  config   print the config file's JSON Schema or reference table (doze config --help)
  job      validate, render or run Nomad jobs annotated for doze (doze job --help)
  vm       run a QEMU VM under a doze owner, for snapshot sleep (doze vm --help)

Run "doze COMMAND --help" for a command's options; "doze --version" prints the version.
Exit codes: 0 ok, 1 failure, 2 usage or config error.`;

const commands: Record<string, (argv: string[]) => Promise<number>> = {
  agent: agentCommand,
  status: statusCommand,
  config: configCommand,
  job: (argv) => jobCommand(argv),
  vm: vmCommand,
};

/** The version in package.json: beside cli.ts when run from source, one level up from dist/cli.js. */
function version(): string {
  for (const candidate of ['./package.json', '../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(candidate, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'doze' && typeof pkg.version === 'string') return pkg.version;
    } catch {
      // not this one
    }
  }
  return 'unknown';
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === '--version' || name === '-V' || name === 'version') {
    process.stdout.write(`doze ${version()}\n`);
    return EXIT.ok;
  }
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${HELP}\n`);
    return name ? EXIT.ok : EXIT.usage;
  }
  const command = commands[name];
  if (!command) {
    process.stderr.write(`doze: unknown command ${JSON.stringify(name)}\n\n${HELP}\n`);
    return EXIT.usage;
  }
  return command(rest);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error) => {
    process.stderr.write(`doze: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(EXIT.failure);
  },
);
