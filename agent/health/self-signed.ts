import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { DozeError, messageOf } from '../shared/errors.js';

const run = promisify(execFile);

export interface KeyPair {
  key: Buffer;
  cert: Buffer;
}

/**
 * A throwaway certificate for the stub's TLS answers to checks that skip
 * verification (Nomad's `tls_skip_verify`): an EC P-256 key and a
 * self-signed certificate made once per agent by `openssl req` (node has no
 * X.509 writer). A check that verifies the certificate cannot be answered
 * with it; those need the operator's certificate (docs/nomad.md).
 */
export async function selfSignedPair(commonName = 'doze-health-stub'): Promise<KeyPair> {
  const dir = await mkdtemp(join(tmpdir(), 'doze-stub-tls-'));
  try {
    const key = join(dir, 'key.pem');
    const cert = join(dir, 'cert.pem');
    await run('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-days', '3650', '-subj', `/CN=${commonName}`, '-keyout', key, '-out', cert,
    ], { timeout: 10_000 });
    return { key: await readFile(key), cert: await readFile(cert) };
  } catch (error) {
    throw new DozeError('E_STUB_TLS', `cannot make the health stub's self-signed certificate with openssl: ${messageOf(error)}`, { cause: error });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
