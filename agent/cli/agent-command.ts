import { Agent } from '../agent.js';
import { loadConfigFile, overridesFromEnv, withEnvTokens } from '../config/load.js';
import { DozeError, messageOf } from '../shared/errors.js';
import { createLogger, LOG_LEVELS, type LogLevel } from '../shared/log.js';
import { EXIT } from './exit-codes.js';
import { parseCommandLine } from './command-line.js';
import { stopKind } from './stop-kind.js';

export const AGENT_HELP = `Usage: doze agent --config FILE [options]

Runs the doze agent on this node: watches each instance's traffic with eBPF,
puts idle instances to sleep and wakes them on the next request.

Options:
  -c, --config FILE      agent config (JSON); see README "Configuration", doze config --help
      --listen HOST:PORT status API / page / metrics address (env DOZE_LISTEN)
      --token TOKEN      bearer token for actions (env DOZE_TOKEN)
      --log-level LEVEL  ${LOG_LEVELS.join('|')} (env DOZE_LOG_LEVEL)
      --bpffs DIR        bpffs mount for the pinned maps, one agent each (env DOZE_BPFFS)
      --chain-prefix P   prefix of the iptables chains it owns (env DOZE_CHAIN_PREFIX)
      --handover         SIGTERM hands over to a successor (below) instead of a final stop
  -h, --help             show this help

Flags override DOZE_* variables, which override the file.
SIGTERM or SIGINT: a final stop: wake every sleeping instance, remove programs and maps, exit 0.
SIGUSR2 (or SIGTERM with --handover): a hand-over stop, for an upgrade: sleepers stay asleep
with their programs, maps and redirects, for the next agent to adopt; exit 0.
Under Nomad (NOMAD_ALLOC_ID set and "nomad" configured) SIGTERM asks Nomad first: a newer
version of the agent's job replacing this allocation (a rolling update) is a hand-over, anything
else (nomad job stop, a drain, no answer within 2 s) a final stop.
Exit codes: 0 clean stop, 1 runtime failure, 2 usage or config error.`;

export async function agentCommand(argv: string[]): Promise<number> {
  const parsed = parseCommandLine('doze agent', AGENT_HELP, {
      args: argv,
      options: {
        config: { type: 'string', short: 'c' },
        listen: { type: 'string' },
        token: { type: 'string' },
        'log-level': { type: 'string' },
        bpffs: { type: 'string' },
        'chain-prefix': { type: 'string' },
        handover: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    });
  if (typeof parsed === 'number') return parsed;
  const { values } = parsed;
  if (!values.config) {
    process.stderr.write(`doze agent: --config FILE is required\n\n${AGENT_HELP}\n`);
    return EXIT.usage;
  }
  let config;
  try {
    config = withEnvTokens(
      await loadConfigFile(values.config, [
        overridesFromEnv(process.env),
        { listen: values.listen, token: values.token, logLevel: values['log-level'], bpffs: values.bpffs, chainPrefix: values['chain-prefix'], origin: 'flags' },
      ]),
      process.env,
    );
  } catch (error) {
    process.stderr.write(`doze agent: ${messageOf(error)}\n`);
    return EXIT.usage;
  }
  const log = createLogger(config.logLevel as LogLevel);
  // One pair of signal handlers for the agent's whole life, installed before it starts: a signal
  // that arrives while it is still starting (attaching programs, installing rules) stops it once it
  // is up instead of killing it half way. (Swapping handlers at the end of start-up lost a signal
  // that arrived in between: libuv drops it with the watcher it was queued on.)
  let onSignal: (signal: string) => void = (signal) => {
    signalledEarly ??= signal;
  };
  let signalledEarly: string | undefined;
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGUSR2', () => onSignal('SIGUSR2'));
  let agent: Agent;
  try {
    agent = await Agent.start(config, log);
  } catch (error) {
    log.fatal({ code: error instanceof DozeError ? error.code : undefined, err: messageOf(error) }, 'agent failed to start');
    process.stderr.write(`doze agent: ${messageOf(error)}\n`);
    return error instanceof DozeError && error.code === 'E_CONFIG' ? EXIT.usage : EXIT.failure;
  }
  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) {
        log.warn({ signal }, 'second signal: exiting without cleanup');
        resolve(EXIT.failure);
        return;
      }
      stopping = true;
      void stopKind(signal, { handoverFlag: values.handover === true, config, env: process.env, log })
        .then((kind) => {
          log.info({ signal, kind }, kind === 'handover' ? 'stopping for hand-over: sleepers stay asleep for the next agent' : 'stopping: waking sleepers and cleaning up');
          return agent.stop({ handover: kind === 'handover' });
        })
        .then(
        () => resolve(EXIT.ok),
        (error) => {
          log.error({ err: messageOf(error) }, 'cleanup failed');
          resolve(EXIT.failure);
        },
      );
    };
    onSignal = stop;
    if (signalledEarly) stop(signalledEarly);
  });
}
