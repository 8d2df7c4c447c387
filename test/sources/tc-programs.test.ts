import { writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { z } from 'zod';
import { attachByTcCommand, detach as detachByTc, HOST_INTERFACE, isAttached, listFilters } from '../../agent/net/tc.js';
import { DozeError } from '../../agent/shared/errors.js';
import { createLogger } from '../../agent/shared/log.js';
import { defaultObjectPath, EbpfSource } from '../../agent/sources/ebpf-source.js';
import { MapClient } from '../../agent/sources/map-client.js';
import { TcPrograms } from '../../agent/sources/tc-programs.js';
import { createBpffs } from '../helpers/bpffs.js';
import { craftSegment, packetRunner } from '../helpers/crafted-packet.js';
import { createNetns } from '../helpers/netns.js';
import { rootTest } from '../helpers/root.js';
import { sh } from '../helpers/sh.js';
import { tempDir } from '../helpers/temp-dir.js';
import type { Teardown } from '../helpers/teardown.js';

/** Programs loaded once into a doze-maps of the test's own, on a bpffs of its own (issue 29). */
async function loadedPrograms(t: Teardown): Promise<{ programs: TcPrograms; globals: string; maps: MapClient }> {
  const bpffs = await createBpffs(t);
  const maps = new MapClient();
  t.teardown(() => maps.close());
  const programs = new TcPrograms(maps);
  const globals = join(bpffs, 'tc', 'globals');
  await sh('mkdir', ['-p', globals]);
  await programs.load(defaultObjectPath(), globals);
  return { programs, globals, maps };
}

const tcFilters = z.array(z.looseObject({ pref: z.number().optional(), options: z.looseObject({ handle: z.string().optional(), bpf_name: z.string().optional(), 'direct-action': z.boolean().optional() }).optional() }));

/** What `tc -j filter show` says of the hook's bpf filters: one row per filter (handle set). */
async function tcShow(device: string, hook: 'egress' | 'ingress') {
  const rows = tcFilters.parse(JSON.parse((await sh('tc', ['-j', 'filter', 'show', 'dev', device, hook])) || '[]'));
  return rows.filter((row) => row.options?.handle !== undefined);
}

function refusedConnection(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host, port, timeout: 5000 });
    socket.once('connect', () => (socket.destroy(), resolve()));
    socket.once('timeout', () => (socket.destroy(), reject(new Error('no answer within 5 s'))));
    socket.once('error', reject);
  });
}

const mapId = z.looseObject({ id: z.number() });

rootTest('attached by fd, the programs are classic tc filters: doze_egress/doze_ingress at pref 100, handle 0xd0, direct-action', async (t) => {
  const { programs } = await loadedPrograms(t);
  const ns = await createNetns(t);
  t.teardown(() => detachByTc(ns.hostIf));
  await programs.attach(ns.hostIf);
  for (const [hook, name] of [['egress', 'doze_egress'], ['ingress', 'doze_ingress']] as const) {
    const rows = await tcShow(ns.hostIf, hook);
    t.is(rows.length, 1, `one filter on ${hook}`);
    t.is(rows[0]!.pref, 100);
    t.is(rows[0]!.options!.handle, '0xd0');
    t.true(rows[0]!.options!['direct-action'], 'direct-action');
    t.deepEqual((await listFilters(ns.hostIf)).filter((f) => f.hook === hook).map((f) => f.programName), [name]);
  }
  t.true(await isAttached(ns.hostIf));
});

rootTest('a second attach to the same interface replaces the filters: still one per hook, same programs', async (t) => {
  const { programs } = await loadedPrograms(t);
  const ns = await createNetns(t);
  t.teardown(() => detachByTc(ns.hostIf));
  await programs.attach(ns.hostIf);
  const first = await listFilters(ns.hostIf);
  await programs.attach(ns.hostIf);
  const second = await listFilters(ns.hostIf);
  t.is(second.length, 2);
  t.deepEqual(second, first);
});

rootTest('the host-port programs go on by fd too, named doze_host_out/doze_host_in', async (t) => {
  const { programs } = await loadedPrograms(t);
  const ns = await createNetns(t);
  t.teardown(() => detachByTc(ns.hostIf));
  // No address on it: an agent of another test file running meanwhile watches every addressed
  // interface for host ports, and would put its own host-port programs on this one (and take them
  // off again), which one agent per node never meets.
  await sh('ip', ['addr', 'flush', 'dev', ns.hostIf]);
  await programs.attach(ns.hostIf, HOST_INTERFACE);
  t.deepEqual((await listFilters(ns.hostIf)).map((f) => `${f.hook} ${f.programName}`).sort(), ['egress doze_host_out', 'ingress doze_host_in']);
  t.true(await isAttached(ns.hostIf, HOST_INTERFACE));
});

rootTest('attaching to an interface that does not exist names it, with what to do', async (t) => {
  const { programs } = await loadedPrograms(t);
  const error = await t.throwsAsync(programs.attach('dznosuch0'), { instanceOf: DozeError });
  t.is((error as DozeError).code, 'E_TC_ATTACH');
  t.regex(error!.message, /cannot attach doze's tc programs to dznosuch0: no such interface/);
  t.regex(error!.message, /host side of its veth or tap/);
});

rootTest('detach removes doze\'s filters and the clsact qdisc, but leaves another tool\'s filter and its qdisc', async (t) => {
  const { programs } = await loadedPrograms(t);
  const ns = await createNetns(t);
  const other = await createNetns(t);
  t.teardown(() => detachByTc(ns.hostIf));
  t.teardown(() => sh('tc', ['qdisc', 'del', 'dev', other.hostIf, 'clsact']).catch(() => undefined));
  await programs.attach(ns.hostIf);
  await programs.detach(ns.hostIf);
  t.deepEqual(await listFilters(ns.hostIf), []);
  t.notRegex(await sh('tc', ['qdisc', 'show', 'dev', ns.hostIf]), /clsact/, 'the qdisc went with the last filter');
  // Another tool's filter at another pref and handle (classic BPF: no object, no pins).
  await programs.attach(other.hostIf);
  await sh('tc', ['filter', 'add', 'dev', other.hostIf, 'ingress', 'pref', '50', 'handle', '1', 'bpf', 'bytecode', '1,6 0 0 0,']);
  await programs.detach(other.hostIf);
  t.deepEqual(await listFilters(other.hostIf), [], "doze's are gone");
  t.deepEqual((await tcShow(other.hostIf, 'ingress')).map((row) => `${row.pref} ${row.options!.handle}`), ['50 0x1'], 'the other filter is left');
  t.regex(await sh('tc', ['qdisc', 'show', 'dev', other.hostIf]), /clsact/);
  await programs.detach('dznosuch0'); // gone with its instance: fine
});

rootTest('packets are counted by programs attached by fd', async (t) => {
  const bpffs = await createBpffs(t);
  const ns = await createNetns(t);
  const source = new EbpfSource({ bpffs, checkMark: 1, log: createLogger('silent') });
  t.teardown(() => source.close({ removePins: true }));
  await source.start();
  await source.attach(ns.hostIf);
  await source.track(ns.instanceIp, { ipv6: [], device: ns.hostIf });
  const send = await packetRunner(t, ns.hostIf, craftSegment('10.213.255.9', ns.instanceIp, 40000, 8080));
  for (let i = 0; i < 3; i++) await send();
  t.is((await source.counter(ns.instanceIp))?.packets, 3n);
  // And real traffic through the kernel's own path: a SYN into the instance, refused (nothing listens).
  await t.throwsAsync(refusedConnection(ns.instanceIp, 8080), { message: /ECONNREFUSED/ });
  t.true((await source.counter(ns.instanceIp))!.packets >= 4n, 'the SYN was counted');
});

rootTest('maps pinned by tc (an agent from before issue 29) are adopted, not made again', async (t) => {
  const bpffs = await createBpffs(t);
  const old = await createNetns(t);
  const ns = await createNetns(t);
  t.teardown(() => detachByTc(old.hostIf));
  await attachByTcCommand(old.hostIf, defaultObjectPath(), bpffs);
  const pin = join(bpffs, 'tc', 'globals', 'doze_counters');
  const before = mapId.parse(JSON.parse(await sh('bpftool', ['-j', 'map', 'show', 'pinned', pin]))).id;
  const source = new EbpfSource({ bpffs, checkMark: 1, log: createLogger('silent') });
  t.teardown(() => source.close({ removePins: true }));
  await source.start();
  await source.attach(ns.hostIf);
  t.is(mapId.parse(JSON.parse(await sh('bpftool', ['-j', 'map', 'show', 'pinned', pin]))).id, before);
  // Both interfaces' programs use that one map.
  await source.track(ns.instanceIp, { ipv6: [], device: ns.hostIf });
  const send = await packetRunner(t, ns.hostIf, craftSegment('10.213.255.9', ns.instanceIp, 40000, 8080));
  await send();
  t.is((await source.counter(ns.instanceIp))?.packets, 1n);
});

rootTest('an object that will not load is refused with what to do', async (t) => {
  const bpffs = await createBpffs(t);
  const bogus = join(await tempDir(t, 'object'), 'doze.bpf.o');
  await writeFile(bogus, 'not an ELF object\n');
  const source = new EbpfSource({ bpffs, checkMark: 1, objectPath: bogus, log: createLogger('silent') });
  t.teardown(() => source.close({ removePins: true }));
  const error = await t.throwsAsync(source.start(), { instanceOf: DozeError });
  t.is((error as DozeError).code, 'E_BPF_LOAD');
  t.regex(error!.message, new RegExp(`cannot load doze's tc programs from ${bogus}: `));
  t.regex(error!.message, /run "make build"/);
});

rootTest('a helper restarted after a timeout loads the programs again before the next attach', async (t) => {
  const { programs, maps } = await loadedPrograms(t);
  const ns = await createNetns(t);
  t.teardown(() => detachByTc(ns.hostIf));
  const child = maps['child']!;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
  await programs.attach(ns.hostIf);
  t.true(await isAttached(ns.hostIf));
});
