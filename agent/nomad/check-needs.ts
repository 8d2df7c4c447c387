import type { NomadServiceCheck } from './nomad-schemas.js';

/*
 * What the stub needs to answer one of a service's checks while its
 * instance sleeps. Nomad hands Consul `protocol = "https"` with
 * `tls_skip_verify` and `tls_server_name` for HTTP checks, and
 * `grpc_use_tls` for gRPC ones (command/agent/consul/service_client.go
 * checkRegistration); Nomad-provider checks use the same fields
 * (client/serviceregistration/checks/client.go). A TLS check that skips
 * verification takes the stub's own certificate; one that verifies takes
 * only a certificate it trusts, which only the operator can give (config:
 * healthChecks.tls, instances[].checkTls, nomad.checkTls per service).
 */

export type CheckTls = 'none' | 'skip-verify' | 'verify';

export interface CheckNeed {
  /** The check's name, or "<type> check #n". */
  name: string;
  type: string;
  tls: CheckTls;
  /** The name a verifying check expects on the certificate (tls_server_name), if set. */
  serverName?: string;
  /**
   * Who runs it: Consul's agent (provider = "consul", the default), or the Nomad client itself
   * (provider = "nomad": client/serviceregistration/checks, from the client's process as root:
   * marked only by its source address, healthChecks.fromSources; README "Which health-check identity fits").
   */
  runBy?: 'nomad';
}

export function checkNeeds(checks: readonly NomadServiceCheck[] | null | undefined, provider?: string): CheckNeed[] {
  return (checks ?? []).map((check, i) => {
    const name = check.Name || `${check.Type} check #${i + 1}`;
    const secured = (check.Type === 'http' && check.Protocol === 'https') || (check.Type === 'grpc' && check.GRPCUseTLS === true);
    const tls: CheckTls = !secured ? 'none' : check.TLSSkipVerify === true ? 'skip-verify' : 'verify';
    return { name, type: check.Type, tls, ...(check.TLSServerName ? { serverName: check.TLSServerName } : {}), ...(provider === 'nomad' ? { runBy: 'nomad' as const } : {}) };
  });
}

/** Advice for checks the Nomad client runs itself: doze tells them from requests by their source address only. */
export function nomadRunChecks(needs: readonly CheckNeed[]): string | undefined {
  const byNomad = needs.filter((n) => n.runBy === 'nomad');
  if (byNomad.length === 0) return undefined;
  return `check${byNomad.length > 1 ? 's' : ''} ${byNomad.map((n) => JSON.stringify(n.name)).join(', ')} ${byNomad.length > 1 ? 'are' : 'is'} run by the Nomad client itself (provider = "nomad"), as root: give the agent the address it checks from in healthChecks.fromSources (the node's own address for address_mode "host", the default; the bridge's address for "alloc"), or its probes count as requests and the instance never sleeps`;
}

/**
 * Why the stub cannot answer these checks truthfully, or undefined when it
 * can. `hasCertificate`: the operator gave a certificate for them.
 */
export function unanswerableChecks(needs: readonly CheckNeed[], hasCertificate: boolean): string | undefined {
  if (hasCertificate) return undefined;
  const verifying = needs.filter((n) => n.tls === 'verify');
  if (verifying.length === 0) return undefined;
  const names = verifying.map((n) => `${JSON.stringify(n.name)} (${n.type === 'grpc' ? 'gRPC with TLS' : 'HTTPS'}${n.serverName ? `, server name ${JSON.stringify(n.serverName)}` : ''})`).join(', ');
  return `check${verifying.length > 1 ? 's' : ''} ${names} verif${verifying.length > 1 ? 'y' : 'ies'} the certificate, and the agent has none they trust: give the agent the service's certificate and key (healthChecks.tls, or nomad.checkTls["<service>"]) or set tls_skip_verify`;
}
