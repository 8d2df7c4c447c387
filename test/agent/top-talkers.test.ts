import type { InstanceView } from '../../agent/status/instance-view.js';
import { renderRows } from '../../agent/status/page.js';
import { inState, startAgent } from '../helpers/agent.js';
import { runCli } from '../helpers/cli.js';
import { get } from '../helpers/http.js';
import { createInstance } from '../helpers/instance.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';

/*
 * Issue 30, "Why is it awake?": traffic over connections that already closed still names who sent
 * it. A real instance (netns, veth, freezer cgroup, app) with the real tc program, a scraper at its
 * own address on the host side opening a new short connection every 200 ms, and the answer through
 * the status API, the status page's row and `doze status --why`.
 */

const SCRAPES = 20;
const EVERY_MS = 200;
const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A second client address on the root side of the veth (as test/agent/host-port.test.ts's checker). */
function scraperAddress(hostIp: string): string {
  const [, , c, d] = hostIp.split('.').map(Number);
  return `10.214.${c}.${d}`;
}

rootTest.serial('one kept awake by a scraper every 200 ms names the scraper\'s address as the top talker', async (t) => {
  const inst = await createInstance(t);
  const scraper = scraperAddress(inst.ns.hostIp);
  await sh('ip', ['addr', 'add', `${scraper}/32`, 'dev', inst.ns.hostIf]);
  await sh('ip', ['-n', inst.ns.name, 'route', 'add', `${scraper}/32`, 'dev', inst.ns.instanceIf]);
  const agent = await startAgent(t, { instances: [inst.config({ idleTimeout: '1s', idlePolicy: 'requests' })] });
  // One request from the host's own address: a client too, but not the busy one.
  t.is((await get(`${inst.app.url}/`, 5000)).status, 200);
  await inState(agent, 'web', 'running');

  // The scraper: a new connection per request (no keep-alive), each closed before the next.
  // `doze status --why` is asked while it scrapes (the CLI takes longer to start than the idle timeout).
  let view: InstanceView | undefined;
  let cli: ReturnType<typeof runCli> | undefined;
  for (let n = 0; n < SCRAPES; n++) {
    const started = performance.now();
    t.is((await get(`${inst.app.url}/metrics`, 5000, false, scraper)).status, 200);
    if (n === 5) cli = runCli(['status', '--addr', agent.address, '--why', 'web']);
    if (n === SCRAPES - 1) view = (await (await fetch(`http://${agent.address}/api/instances/web`)).json()) as InstanceView;
    await delay(Math.max(0, EVERY_MS - (performance.now() - started)));
  }
  t.is(view?.state, 'running', 'kept awake past its 1 s idle timeout');
  const recent = view?.whyAwake?.find((r) => r.kind === 'recent-traffic');
  t.truthy(recent, JSON.stringify(view?.whyAwake));
  if (recent?.kind !== 'recent-traffic') return;
  t.log(JSON.stringify(recent));
  const top = recent.topTalkers[0];
  t.is(top?.address, scraper, 'the scraper is the top talker');
  t.is(top?.protocol, 'tcp');
  // Its connections within the idle timeout all count; a SYN retransmitted would not.
  t.true(top!.connections >= 5 && top!.connections <= SCRAPES, `${top!.connections} connections`);
  t.true(top!.ageMs < 1000, `last seen ${top!.ageMs} ms ago`);
  t.true(top!.overMs >= (top!.connections - 1) * EVERY_MS * 0.8, `${top!.connections} connections over ${top!.overMs} ms`);
  t.true(typeof top!.port === 'number' && top!.port > 0);
  // The host's one request, 3 s ago, is past the idle timeout: not a reason now.
  t.false(recent.topTalkers.some((x) => x.address === inst.ns.hostIp), 'the one-off client is not named');

  // The same in words: the status page's row and `doze status --why`.
  const scraperText = new RegExp(`top talkers ${scraper.replaceAll('.', '\\.')}:\\d+ \\(tcp, \\d+ connection\\(s\\) in \\d+\\.\\d s, last \\d+ ms ago\\)`);
  t.regex(view!.whyAwakeText!.join('\n'), scraperText);
  t.regex(renderRows([view!]), scraperText);
  const answer = await cli!;
  t.is(answer.code, 0, answer.stderr);
  t.regex(answer.stdout, new RegExp(`recent-traffic +traffic .*${scraperText.source}`));
});
