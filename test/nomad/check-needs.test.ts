import test from 'ava';
import { checkNeeds, unanswerableChecks } from '../../agent/nomad/check-needs.js';
import { checkJob } from '../../plugin/check-job.js';
import { webJob } from '../doubles/nomad/fixtures.js';

test('TLS needs of Nomad checks: https and grpc_use_tls, with or without tls_skip_verify', (t) => {
  const needs = checkNeeds([
    { Name: 'plain', Type: 'http' },
    { Name: 'skip', Type: 'http', Protocol: 'https', TLSSkipVerify: true },
    { Name: 'strict', Type: 'http', Protocol: 'https', TLSServerName: 'web.service.consul' },
    { Type: 'grpc', GRPCUseTLS: true },
    { Name: 'tcp', Type: 'tcp' },
  ]);
  t.deepEqual(needs.map((n) => n.tls), ['none', 'skip-verify', 'verify', 'verify', 'none']);
  t.is(needs[3]!.name, 'grpc check #4');
  t.regex(unanswerableChecks(needs, false) ?? '', /checks "strict" \(HTTPS, server name "web.service.consul"\), "grpc check #4" \(gRPC with TLS\) verify the certificate/);
  t.is(unanswerableChecks(needs, true), undefined, 'the operator gave a certificate');
  t.is(unanswerableChecks(needs.slice(0, 2), false), undefined, 'skip-verify takes the stub\'s own');
});

test('doze job validate names a verifying TLS check doze cannot answer without a certificate', (t) => {
  const job = webJob({ groupMeta: { 'doze.enabled': 'true' } });
  const service = (job.TaskGroups as Array<{ Services: Array<{ Checks: Array<Record<string, unknown>> }> }>)[0]!.Services[0]!;
  service.Checks[0] = { ...service.Checks[0], Protocol: 'https' };
  const result = checkJob(job);
  t.deepEqual(result.problems, []);
  t.true(result.warnings.some((w) => /group "web": service "web": check "alive" \(HTTPS\) verifies the certificate.*keeps the instance awake/.test(w)), result.warnings.join('\n'));
});

test('doze job validate names checks the Nomad client runs itself (provider = "nomad"), with how to mark them', (t) => {
  const job = webJob({ groupMeta: { 'doze.enabled': 'true' } });
  (job.TaskGroups as Array<{ Services: Array<Record<string, unknown>> }>)[0]!.Services[0]!.Provider = 'nomad';
  const result = checkJob(job);
  t.deepEqual(result.problems, []);
  t.true(result.warnings.some((w) => /group "web": service "web": check "alive" is run by the Nomad client itself \(provider = "nomad"\), as root: give the agent the address it checks from in healthChecks\.fromSources/.test(w)), result.warnings.join('\n'));
});
