// Long-lived probe worker: the Consul double spawns it under the checker's
// uid/gid so every probe socket is owned by that user, and iptables
// `-m owner --uid-owner` matches it as it would match the consul user.
// Protocol, one JSON object per line:
//   worker → parent, once: {"ready":true,"pid":N,"uid":N,"gid":N}
//   parent → worker:       {"seq":N,"probe":{…ProbeRequest}}
//   worker → parent:       {"seq":N,"result":{status,output},"ms":N}
// Exits when stdin closes, so it never outlives the test that spawned it.
import readline from 'node:readline';
import { probe } from './probes.mjs';

const send = (message) => process.stdout.write(`${JSON.stringify(message)}\n`);
send({ ready: true, pid: process.pid, uid: process.getuid(), gid: process.getgid() });

const lines = readline.createInterface({ input: process.stdin });
lines.on('line', async (line) => {
  let request;
  try {
    request = JSON.parse(line);
  } catch {
    return;
  }
  const started = performance.now();
  let result;
  try {
    result = await probe(request.probe);
  } catch (error) {
    result = { status: 'critical', output: `probe failed: ${error?.message ?? String(error)}` };
  }
  send({ seq: request.seq, result, ms: performance.now() - started });
});
lines.on('close', () => process.exit(0));
