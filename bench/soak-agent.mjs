// The soak's agent process (bench/soak.ts): the built agent (dist/, `make build`) started as
// `doze agent` starts it, in a process of its own so its RSS and open fds are the agent's alone,
// plus the detector's events as JSON lines on stdout (bench/soak-events.ts: every wake's
// duration, which no log line carries). Logs go to stderr. Stops cleanly on SIGTERM, SIGINT or
// when stdin closes (the bench died), waking every sleeper as the CLI does.
//   node bench/soak-agent.mjs CONFIG.json
import { readFile } from 'node:fs/promises';
import { Agent } from '../dist/agent/agent.js';
import { parseConfig } from '../dist/agent/config/load.js';
import { messageOf } from '../dist/agent/shared/errors.js';
import { createLogger } from '../dist/agent/shared/log.js';

const send = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

const config = parseConfig(JSON.parse(await readFile(process.argv[2], 'utf8')));
const log = createLogger(config.logLevel, 2);
let agent;
let stopWanted = false;
let stopping = false;
// A stop asked for while the agent is starting runs once it is up: never half way through start-up.
const stop = () => {
  stopWanted = true;
  if (!agent || stopping) return;
  stopping = true;
  void agent.stop().catch((error) => log.error({ err: messageOf(error) }, 'cleanup failed')).finally(() => {
    send({ type: 'stopped' });
    process.exit(0);
  });
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop).resume();
try {
  agent = await Agent.start(config, log);
} catch (error) {
  process.stderr.write(`soak agent: ${messageOf(error)}\n`);
  process.exit(1);
}
agent.detector.on('transition', (e) => send({ type: 'transition', id: e.instance.id, from: e.from, to: e.to, reason: e.reason, at: e.at }));
agent.detector.on('woke', (i, seconds) => send({ type: 'woke', id: i.id, ms: seconds * 1000 }));
agent.detector.on('wakeFailed', (i, reason) => send({ type: 'wakeFailed', id: i.id, reason }));
// How long each wake event took from the tc program to here (both clocks are CLOCK_MONOTONIC).
agent.source.onWake((e) => send({ type: 'wakeEvent', key: e.instanceAddr, lagMs: Number(process.hrtime.bigint() - e.tsNs) / 1e6 }));
send({ type: 'ready', address: agent.address, pid: process.pid });
if (stopWanted) stop();
