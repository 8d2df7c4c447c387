import test from 'ava';
import { renderSummary } from '../../agent/status/page.js';
import type { StatusReport } from '../../agent/status/status-report.js';

function report(detail: Record<string, unknown>, hostInterfaces: string[] = []): StatusReport {
  return {
    instances: { total: 0, byState: {} },
    budget: { maxActive: null, maxActiveMemory: null, active: 0, activeMemory: 0, freedMemory: 0, queued: 0, overruns: 0, pacedWakes: null },
    wakeEvents: { gaps: 0, lastGap: null, missed: 0, late: 0 },
    memory: null, savings: null,
    connections: { nomad: { address: 'http://127.0.0.1:4646', connected: true, since: '2026-12-01T00:00:00.000Z', detail } },
    allocations: [],
    versions: {},
    hostPorts: { interfaces: hostInterfaces },
  };
}

test('the summary says why blocking queries stand in for the event stream, escaped, and nothing once the stream is back', (t) => {
  t.regex(renderSummary(report({ source: 'blocking', fallback: 'closed before its first heartbeat <3 times>' })), /blocking queries instead of the event stream: closed before its first heartbeat &#60;3 times&#62;/);
  t.notRegex(renderSummary(report({ source: 'stream', fallback: null })), /instead of the event stream/);
});

test('the summary names the interfaces watched for host ports, and says nothing while there are none', (t) => {
  t.regex(renderSummary(report({}, ['lo', 'eth0', 'nomad'])), /interfaces watched for host ports: lo, eth0, nomad/);
  t.notRegex(renderSummary(report({})), /watched for host ports/);
});

test('the summary shows the Nomad and Consul versions read at start', (t) => {
  const withVersions = { ...report({ source: 'stream' }), versions: { nomad: { version: '1.9.3', minimum: '1.7.0' }, consul: { version: null, minimum: null, error: 'timeout' } } };
  const html = renderSummary(withVersions);
  t.regex(html, /data-version="1\.9\.3"[^>]*>Nomad 1\.9\.3: connected/);
  t.regex(html, /Consul: not configured/);
});

test('without swap the swap card gives the reason once, not "no swap" twice', (t) => {
  const reason = 'no swap on this node (/proc/swaps lists none): reclaim could only drop page cache';
  const html = renderSummary({ ...report({}), memory: { swap: { available: false, totalBytes: 0, usedBytes: 0, reason }, residentBytes: 0, compressedBytes: 0, freedBytes: 0 } });
  t.is(html.split('no swap on this node').length - 1, 1, html);
  t.regex(html, /\/proc\/swaps lists none/);
});
