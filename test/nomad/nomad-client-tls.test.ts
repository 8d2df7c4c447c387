import { execFile, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { NomadClient, NomadError } from '../../agent/nomad/nomad-client.js';
import { missing, testIf } from '../helpers/needs.js';

const opensslTest = testIf(missing('openssl', () => (spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0 ? undefined : 'the openssl command makes the test certificates (Debian package openssl)')));

function openssl(args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => execFile('openssl', args, { cwd, timeout: 10_000 }, (error, _out, stderr) => (error ? reject(new Error(`openssl ${args[0]}: ${stderr || error.message}`)) : resolve())));
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate, in a directory removed at teardown. */
async function certificates(t: ExecutionContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'dz-tls-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=doze test CA'], dir);
  await writeFile(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\n');
  for (const name of ['server', 'client']) {
    await openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name}.global.nomad`], dir);
    const ext = name === 'server' ? ['-extfile', 'server.ext'] : [];
    await openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.pem`, '-days', '1', ...ext], dir);
  }
  return dir;
}

opensslTest('TLS: verifies Nomad with the CA and presents the client certificate (mutual TLS, as Nomad\'s verify_https_client)', async (t) => {
  const dir = await certificates(t);
  const server = https.createServer(
    { key: await readFile(join(dir, 'server.key')), cert: await readFile(join(dir, 'server.pem')), ca: await readFile(join(dir, 'ca.pem')), requestCert: true, rejectUnauthorized: true },
    (_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/json', 'X-Nomad-Index': '7' });
      res.end('[]');
    },
  );
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  server.on('tlsClientError', () => undefined);
  const address = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const tls = { caFile: join(dir, 'ca.pem'), certFile: join(dir, 'client.pem'), keyFile: join(dir, 'client.key') };

  const ok = await new NomadClient({ address, tls }).nodeAllocations('n1');
  t.deepEqual(ok, { index: 7, value: [] });

  const untrusted = await t.throwsAsync(new NomadClient({ address, tls: { certFile: tls.certFile, keyFile: tls.keyFile }, timeoutMs: 3000 }).nodeAllocations('n1'), { instanceOf: NomadError });
  t.is(untrusted.code, 'E_NOMAD_UNREACHABLE');
  t.regex(untrusted.message, /certificate/i);

  const anonymous = await t.throwsAsync(new NomadClient({ address, tls: { caFile: tls.caFile }, timeoutMs: 3000 }).nodeAllocations('n1'), { instanceOf: NomadError });
  t.is(anonymous.code, 'E_NOMAD_UNREACHABLE');

  const missing = t.throws(() => new NomadClient({ address, tls: { caFile: join(dir, 'nope.pem') } }));
  t.regex(missing!.message, /cannot read the Nomad TLS CA certificate .*nope\.pem: ENOENT/);
});
