import type { Teardown } from './teardown.js';
import { Agent, type AgentOptions } from '../../agent/agent.js';
import { parseConfig, withEnvTokens } from '../../agent/config/load.js';
import type { InstanceState } from '../../agent/detector/states.js';
import { createLogger } from '../../agent/shared/log.js';
import { createBpffs } from './bpffs.js';
import { uniqueSuffix } from './names.js';
import { sweepChainsAtTeardown } from './netfilter.js';

/** Starts an in-process agent on a private bpffs and private iptables chains; stops it at teardown. */
export async function startAgent(t: Teardown, config: Record<string, unknown>, options: AgentOptions & { env?: NodeJS.ProcessEnv } = {}): Promise<Agent> {
  const bpffs = await createBpffs(t);
  const chainPrefix = `DZ${uniqueSuffix().toUpperCase()}`;
  sweepChainsAtTeardown(t, chainPrefix);
  const parsed = parseConfig({
    listen: '127.0.0.1:0',
    logLevel: process.env.DOZE_TEST_LOG ? 'debug' : 'silent',
    bpffs,
    netfilter: { chainPrefix },
    ...config,
  });
  // As `doze agent` does: NOMAD_TOKEN and CONSUL_HTTP_TOKEN from the environment given.
  const agent = await Agent.start(options.env ? withEnvTokens(parsed, options.env) : parsed, createLogger(parsed.logLevel), options);
  let stopped = false;
  t.teardown(async () => {
    if (!stopped) await agent.stop();
    stopped = true;
  });
  return agent;
}

/** Resolves at once when the instance is in `state` already, else as nextState (checked and listened to in one tick: no race). */
export function inState(agent: Agent, id: string, state: InstanceState, timeoutMs = 5000): Promise<number> {
  return agent.detector.get(id)?.state === state ? Promise.resolve(0) : nextState(agent, id, state, timeoutMs);
}

/** Resolves when the instance enters `state` (an event, not a poll); rejects after the deadline. */
export function nextState(agent: Agent, id: string, state: InstanceState, timeoutMs = 5000): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      agent.detector.off('transition', listener);
      reject(new Error(`${id} did not become ${state} within ${timeoutMs} ms (now ${agent.detector.get(id)?.state})`));
    }, timeoutMs);
    const listener = (e: { instance: { id: string }; to: InstanceState }) => {
      if (e.instance.id === id && e.to === state) {
        clearTimeout(timer);
        agent.detector.off('transition', listener);
        resolve(performance.now() - started);
      }
    };
    agent.detector.on('transition', listener);
  });
}
