import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DockerEngine, DockerError } from '../../agent/docker/engine-client.js';
import { findTaskContainer } from '../../agent/docker/task-container.js';

/** An engine double on a unix socket of the test's own; `handler` answers every request. */
async function engineDouble(t: ExecutionContext, handler: http.RequestListener): Promise<{ socket: string; paths: string[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'dz-engine-'));
  const socket = join(dir, 'd.sock');
  const paths: string[] = [];
  const server = http.createServer((req, res) => {
    paths.push(req.url ?? '');
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  t.teardown(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });
  return { socket, paths };
}

test('a task\'s container is looked up by the allocation label, then its name; the filter is the one the Engine API documents', async (t) => {
  const alloc = '8a3c0d0e-1111-2222-3333-444455556666';
  const inspect = (id: string, name: string) => ({ Id: id, Name: name, State: { Status: 'running', Running: true, Paused: false, Pid: 4242 }, Config: { Labels: {} }, HostConfig: { NetworkMode: 'none' }, NetworkSettings: { SandboxKey: `/var/run/docker/netns/${id.slice(0, 12)}`, Ports: {}, Networks: {} } });
  const { socket, paths } = await engineDouble(t, (req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.url?.startsWith('/containers/json')) {
      return res.end(JSON.stringify([
        { Id: 'aaa', Names: [`/nomad_init_${alloc}`], Labels: { 'com.hashicorp.nomad.alloc_id': alloc }, State: 'running' },
        { Id: 'bbb', Names: [`/app-${alloc}`], Labels: { 'com.hashicorp.nomad.alloc_id': alloc }, State: 'running' },
        { Id: 'ccc', Names: [`/connect-proxy-web-${alloc}`], Labels: { 'com.hashicorp.nomad.alloc_id': alloc }, State: 'running' },
      ]));
    }
    const id = /^\/containers\/(\w+)\/json$/.exec(req.url ?? '')?.[1];
    res.end(JSON.stringify(inspect(id === 'aaa' ? 'a'.repeat(64) : 'b'.repeat(64), id === 'aaa' ? `/nomad_init_${alloc}` : `/app-${alloc}`)));
  });
  const found = await findTaskContainer(new DockerEngine({ socket }), alloc, 'app');
  if (found.kind !== 'found') return t.fail(JSON.stringify(found));
  t.is(found.container.Id, 'b'.repeat(64));
  t.is(found.pause?.NetworkSettings.SandboxKey, `/var/run/docker/netns/${'a'.repeat(12)}`);
  t.deepEqual(JSON.parse(decodeURIComponent(new URL(paths[0]!, 'http://x').searchParams.get('filters')!)), { label: [`com.hashicorp.nomad.alloc_id=${alloc}`] });
});

test('engine failures are DockerErrors with a stable code: an error status, an answer that is not the API\'s, no answer before the deadline', async (t) => {
  const notFound = await engineDouble(t, (_req, res) => res.writeHead(404, { 'content-type': 'application/json' }).end('{"message":"No such container: x"}'));
  const error404 = await t.throwsAsync(new DockerEngine({ socket: notFound.socket }).inspect('x'), { instanceOf: DockerError });
  t.like(error404, { code: 'E_DOCKER_STATUS', status: 404, message: 'Docker engine: GET /containers/x/json answered 404: No such container: x' });

  const garbled = await engineDouble(t, (_req, res) => res.end('[{"Names": 7}]'));
  const bad = await t.throwsAsync(new DockerEngine({ socket: garbled.socket }).containersWithLabels(['a=b']), { instanceOf: DockerError });
  t.is(bad?.code, 'E_DOCKER_RESPONSE');
  t.regex(bad?.message ?? '', /^Docker engine: GET \/containers\/json: /);

  const silent = await engineDouble(t, () => undefined);
  const slow = await t.throwsAsync(new DockerEngine({ socket: silent.socket, timeoutMs: 100 }).ping(), { instanceOf: DockerError });
  t.like(slow, { code: 'E_DOCKER_UNREACHABLE' });
  t.regex(slow?.message ?? '', /no answer within 100 ms/);
});
