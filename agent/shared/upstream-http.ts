import { readFileSync } from 'node:fs';
import https from 'node:https';
import { DozeError, messageOf } from './errors.js';

/* What the Nomad and Consul clients share in reaching their HTTP APIs: the address check and TLS files. */

export interface TlsFiles {
  /** PEM files: the CA to verify the server with, and the client's certificate and key. */
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  /** Name to verify the server certificate against. */
  serverName?: string;
}

/** `address` as an http(s) URL, or a config error naming `upstream` and an example (a bare "host:port" parses with scheme "host:"). */
export function httpUrl(upstream: string, address: string, example: string): URL {
  let url: URL | undefined;
  try {
    url = new URL(address);
  } catch {
    // reported below
  }
  if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    throw new DozeError('E_CONFIG', `${upstream} address ${JSON.stringify(address)} is not an http(s) URL (expected e.g. "${example}")`);
  }
  return url;
}

/** A keep-alive https agent with `tls`'s files read now, so a missing file is a config error at start naming it. */
export function tlsClientAgent(upstream: string, tls: TlsFiles = {}): https.Agent {
  const read = (file: string | undefined, what: string) => {
    if (!file) return undefined;
    try {
      return readFileSync(file);
    } catch (error) {
      throw new DozeError('E_CONFIG', `cannot read the ${upstream} TLS ${what} ${file}: ${(error as NodeJS.ErrnoException).code ?? messageOf(error)}`, { cause: error });
    }
  };
  return new https.Agent({
    ca: read(tls.caFile, 'CA certificate'),
    cert: read(tls.certFile, 'client certificate'),
    key: read(tls.keyFile, 'client key'),
    servername: tls.serverName,
    keepAlive: true,
  });
}
