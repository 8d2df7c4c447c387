/**
 * What surrounds a sleep besides the runtime (the detector's SleepHooks):
 * health checks marked and redirected to the stub, and, in hold mode, first
 * connections redirected to the hold listener. Owns the netfilter chains and
 * the listeners, and removes them all on stop.
 */
import type { DozeConfig } from './config/schema.js';
import type { Detector, SleepHooks } from './detector/detector.js';
import type { ReadonlyInstance } from './detector/managed-instance.js';
import { readFile } from 'node:fs/promises';
import { isIPv6 } from 'node:net';
import { ConfigError, messageOf } from './shared/errors.js';
import { StubServer, type StubStatus } from './health/stub-server.js';
import { HoldServer, type HoldState } from './hold/hold-server.js';
import type { Logger } from './shared/log.js';
import { CheckMarking } from './netfilter/check-marking.js';
import { checkRedirect, holdRedirect, observerRedirect, type DnatChain, type DnatTarget } from './netfilter/dnat-chain.js';
import { FETCH_PORTS, fetchMetrics } from './health/metrics-snapshot.js';
import { ObserverServer } from './health/observer-server.js';
import { ObserverCut } from './netfilter/observer-cut.js';
import { ip6tablesWorks } from './net/iptables.js';
import { routeSource } from './netfilter/route-source.js';
import { run } from './process/exec.js';
import { hostOf, portOf } from './sources/ipv4.js';
import { describeFailure } from './detector/reasons.js';

/** The metrics fetch before a sleep: the pause waits for it, so it is short (a scrape takes milliseconds). */
const METRICS_FETCH_TIMEOUT_MS = 1000;

/**
 * What the guards ask of the detector: its instances to read, and what they report back (a wake,
 * a check answered, connections held, a hold wake's first response). The detector writes it all.
 */
export type SleepGuardsContext = Pick<Detector, 'get' | 'wake' | 'countCheckAnswered' | 'noteHeld' | 'reportFirstResponse'>;

export class SleepGuards implements SleepHooks {
  readonly stub: StubServer;
  readonly hold: HoldServer;
  /**
   * A marked connection (a check's, or an observer's scrape) still talking to the instance postpones
   * its sleep: frozen under it, it would hang until the next wake.
   */
  readonly guardChecks: boolean;
  /** Health checks can be identified (uid or sources): their marking and redirect exist. */
  private readonly watchChecks: boolean;
  /** Answers observers (config observers.fromSources) of sleeping instances with their last metrics. */
  readonly observers: ObserverServer;
  private readonly watchObservers: boolean;
  private observerMarking: CheckMarking | undefined;
  /** Observers' redirect, IPv4 and (when ip6tables works) IPv6. */
  private observerChains: { v4: DnatChain; v6: DnatChain | undefined; cut4: ObserverCut; cut6: ObserverCut | undefined } | undefined;
  private marking: CheckMarking | undefined;
  private checks: DnatChain | undefined;
  /** IPv6 checks' redirect (ip6tables), when ip6tables works here. */
  private checks6: DnatChain | undefined;
  private readonly holds: ReturnType<typeof holdRedirect>;
  private holdInstalled = false;
  /** Hold mode's IPv6 redirect (ip6tables), installed with the first IPv6 hold. */
  private holds6: ReturnType<typeof holdRedirect> | undefined;
  private hold6Installed = false;
  /** Whether ip6tables works here (install() finds out): the IPv6 twins of the redirects exist only then. */
  private ipv6 = false;
  /** Where each instance's listeners live (the route's local address): looked up once, not per sleep. */
  private readonly listenHosts = new Map<string, string>();
  private readonly listenHosts6 = new Map<string, string>();
  private readonly keyPairs = new Map<string, Promise<{ key: Buffer; cert: Buffer }>>();

  constructor(private readonly config: DozeConfig, context: SleepGuardsContext, private readonly log: Logger) {
    const c = config.healthChecks;
    this.watchChecks = c.fromUid !== undefined || c.fromUser !== undefined || c.fromSources.length > 0;
    this.guardChecks = this.watchChecks || config.observers.fromSources.length > 0;
    this.stub = new StubServer({
      host: config.stub.listen.slice(0, config.stub.listen.lastIndexOf(':')),
      status: (id) => stubStatus(context.get(id)?.state),
      failureReason: (id) => {
        const failure = context.get(id)?.failure;
        return failure && describeFailure(failure);
      },
      onAnswered: (id) => {
        const instance = context.get(id);
        if (instance) context.countCheckAnswered(instance);
      },
      tls: (id) => {
        const files = context.get(id)?.config.checkTls ?? config.healthChecks.tls;
        return files ? this.keyPair(files) : undefined;
      },
    });
    this.hold = new HoldServer({
      state: (id) => holdState(context.get(id)?.state),
      onHeld: (id) => {
        const instance = context.get(id);
        if (instance) void context.wake(instance, 'held connection');
      },
      upstream: (id) => {
        const instance = context.get(id);
        return instance ? { host: hostOf(instance.config.address), port: portOf(instance.config.address) } : undefined;
      },
      holdTimeoutMs: (id) => context.get(id)?.config.holdTimeout ?? 10_000,
      onHeldChange: (id, held) => {
        const instance = context.get(id);
        if (instance) context.noteHeld(instance, held);
      },
      onFirstResponse: (id, heldAtNs, answeredAtNs) => {
        const instance = context.get(id);
        if (instance) context.reportFirstResponse(instance, Number(answeredAtNs - heldAtNs) / 1e6);
      },
    });
    this.watchObservers = config.observers.fromSources.length > 0;
    this.observers = new ObserverServer();
    this.holds = holdRedirect(c.mark, config.netfilter.chainPrefix, this.watchObservers ? config.observers.mark : undefined);
  }

  /** The operator's certificate and key for TLS checks, read once per pair of files. */
  private keyPair(files: { certFile: string; keyFile: string }): Promise<{ key: Buffer; cert: Buffer }> {
    const key = `${files.certFile}\0${files.keyFile}`;
    let pair = this.keyPairs.get(key);
    if (!pair) {
      pair = Promise.all([readFile(files.certFile), readFile(files.keyFile)]).then(
        ([cert, keyPem]) => ({ cert, key: keyPem }),
        (error) => {
          this.keyPairs.delete(key);
          this.log.warn({ cert: files.certFile, key: files.keyFile, err: messageOf(error) }, 'cannot read the certificate for TLS checks; they are refused');
          throw new ConfigError(`cannot read the TLS check certificate ${files.certFile} / key ${files.keyFile}: ${messageOf(error)}`, { cause: error });
        },
      );
      this.keyPairs.set(key, pair);
    }
    return pair;
  }

  /** Marking and the check redirect exist only when checks can be identified; the observers' only when there are some. */
  async install(): Promise<void> {
    const c = this.config.healthChecks;
    this.ipv6 = await ip6tablesWorks();
    if (this.ipv6) this.holds6 = holdRedirect(c.mark, this.config.netfilter.chainPrefix, this.watchObservers ? this.config.observers.mark : undefined, 6);
    if (this.watchObservers) {
      const o = this.config.observers;
      const prefix = this.config.netfilter.chainPrefix;
      const ipv6 = this.ipv6;
      const fromLocalPorts = { uid: process.getuid?.() ?? 0, ...FETCH_PORTS };
      this.observerMarking = new CheckMarking({ mark: o.mark, fromSources: o.fromSources, fromLocalPorts, everyPacketFromSources: true, label: 'observers' }, `${prefix}-OBS`, ipv6 ? [4, 6] : [4]);
      await this.observerMarking.install();
      this.observerChains = {
        v4: observerRedirect(o.mark, prefix),
        v6: ipv6 ? observerRedirect(o.mark, prefix, 6) : undefined,
        cut4: new ObserverCut(`${prefix}-OBS-CUT`, o.mark),
        cut6: ipv6 ? new ObserverCut(`${prefix}-OBS-CUT`, o.mark, 6) : undefined,
      };
      for (const chain of [this.observerChains.v4, this.observerChains.v6, this.observerChains.cut4, this.observerChains.cut6]) await chain?.install();
    }
    if (this.watchChecks) {
      const fromUid = c.fromUid ?? (c.fromUser === undefined ? undefined : await uidOf(c.fromUser));
      // IPv6 checks are marked and redirected by ip6tables alike; a node without it keeps IPv4's.
      const ipv6 = this.ipv6;
      if (!ipv6) this.log.warn('ip6tables does not work here: health checks over IPv6 are not recognised, and a sleeping instance does not answer them');
      this.marking = new CheckMarking({ mark: c.mark, fromUid, fromSources: c.fromSources }, this.config.netfilter.chainPrefix, ipv6 ? [4, 6] : [4]);
      await this.marking.install();
      this.checks = checkRedirect(c.mark, this.config.netfilter.chainPrefix);
      await this.checks.install();
      if (ipv6) {
        this.checks6 = checkRedirect(c.mark, this.config.netfilter.chainPrefix, 6);
        await this.checks6.install();
      }
    }
  }

  async beforeSleep(instance: ReadonlyInstance): Promise<void> {
    const needHost = this.checks !== undefined || instance.wake === 'hold' || this.observerChains !== undefined;
    if (!needHost) return;
    if (this.observerChains) {
      // Before the redirect below (the fetch would be redirected too) and before the freeze; its
      // connection is marked an observer's (FETCH_PORTS), so it neither counts nor wakes.
      const address = instance.config.address;
      const snapshot = await fetchMetrics(hostOf(address), portOf(address), instance.config.metricsPath, METRICS_FETCH_TIMEOUT_MS);
      if (snapshot.kind === 'failed') this.log.warn({ instance: instance.id, reason: snapshot.reason }, 'no metrics for its observers while it sleeps (they get a 503)');
      this.observers.setSnapshot(instance.id, snapshot);
    }
    const port = portOf(instance.config.address);
    // A host port is reached on any of the node's addresses (127.0.0.1 too, for QEMU's hostfwd).
    const all: Array<Omit<DnatTarget, 'toHost' | 'toPort'>> = [
      ...(instance.onHostPort ? [{ port }] : []),
      ...[...(instance.onHostPort ? [] : [instance.config.address]), ...instance.config.addresses, ...instance.config.checkAddresses].map((a) => ({ ip: hostOf(a), port: portOf(a) })),
    ];
    // A DNAT keeps the family: IPv6 checks go to a listener on an IPv6 address (ip6tables).
    const targets = all.filter((target) => target.ip === undefined || !isIPv6(target.ip));
    const targets6 = all.filter((target) => target.ip !== undefined && isIPv6(target.ip));
    let host = this.listenHosts.get(instance.id);
    if (host === undefined) {
      // Its own address first (a host-port instance's is the node's, whose route says local), else its first IPv4 one.
      const own = hostOf(instance.config.address);
      const first = isIPv6(own) ? targets.find((target) => target.ip !== undefined)?.ip : own;
      host = (first !== undefined ? await routeSource(first) : undefined) ?? this.stub.host;
      this.listenHosts.set(instance.id, host);
    }
    if (this.checks) {
      const to = await this.stub.open(instance.id, host);
      for (const target of targets) await this.checks.add(instance.id, { ...target, toHost: host, toPort: to });
    }
    let host6: string | undefined;
    if (targets6.length > 0 && (this.checks6 || this.observerChains?.v6 || (instance.wake === 'hold' && this.holds6))) {
      host6 = this.listenHosts6.get(instance.id);
      if (host6 === undefined) {
        host6 = (await routeSource(targets6[0]!.ip!)) ?? '::1';
        this.listenHosts6.set(instance.id, host6);
      }
    }
    if (this.checks6 && host6 !== undefined) {
      const to = await this.stub.openAlso(instance.id, host6);
      for (const target of targets6) await this.checks6.add(instance.id, { ...target, toHost: host6, toPort: to });
    }
    if (this.observerChains) {
      const to = await this.observers.open(instance.id, host);
      for (const target of targets) await this.observerChains.v4.add(instance.id, { ...target, toHost: host, toPort: to });
      for (const target of targets) await this.observerChains.cut4.add(instance.id, target);
      if (this.observerChains.v6 && host6 !== undefined) {
        const to6 = await this.observers.open(instance.id, host6);
        for (const target of targets6) await this.observerChains.v6.add(instance.id, { ...target, toHost: host6, toPort: to6 });
        for (const target of targets6) await this.observerChains.cut6?.add(instance.id, target);
      }
    }
    if (instance.wake === 'hold') {
      if (!this.holdInstalled) {
        await this.holds.chain.install();
        this.holdInstalled = true;
      }
      const to = await this.hold.open(instance.id, host);
      this.hold.arm(instance.id);
      const chain = this.holds.forInstance(instance.config.maxHeld);
      for (const target of targets) await chain.add(instance.id, { ...target, toHost: host, toPort: to });
      if (this.holds6 && host6 !== undefined) {
        if (!this.hold6Installed) {
          await this.holds6.chain.install();
          this.hold6Installed = true;
        }
        const to6 = await this.hold.openAlso(instance.id, host6);
        const chain6 = this.holds6.forInstance(instance.config.maxHeld);
        for (const target of targets6) await chain6.add(instance.id, { ...target, toHost: host6, toPort: to6 });
      }
    }
  }

  async awake(instance: ReadonlyInstance): Promise<void> {
    await this.checks?.remove(instance.id);
    await this.checks6?.remove(instance.id);
    for (const chain of this.observerChainList()) await chain.remove(instance.id);
    this.observers.closeConnections(instance.id);
    this.stub.closeConnections(instance.id);
    if (this.holdInstalled) await this.holds.chain.remove(instance.id);
    if (this.hold6Installed) await this.holds6?.chain.remove(instance.id);
    // Awake by now: what was held goes through.
    this.hold.release(instance.id);
  }

  async wakeFailed(instance: ReadonlyInstance, reason: string): Promise<void> {
    // Refuse from now on: Consul goes critical, Nomad reschedules; held clients learn at once.
    this.stub.markFailed(instance.id, reason);
    this.hold.fail(instance.id);
    if (this.holdInstalled) await this.holds.chain.remove(instance.id);
    if (this.hold6Installed) await this.holds6?.chain.remove(instance.id);
  }

  private observerChainList(): Array<DnatChain | ObserverCut> {
    const c = this.observerChains;
    return c ? [c.v4, c.v6, c.cut4, c.cut6].filter((chain) => chain !== undefined) : [];
  }

  /** An instance leaves management: its rules and listeners go with it. */
  async release(id: string): Promise<void> {
    this.listenHosts.delete(id);
    this.listenHosts6.delete(id);
    await this.checks?.remove(id);
    await this.checks6?.remove(id);
    for (const chain of this.observerChainList()) await chain.remove(id);
    if (this.holdInstalled) await this.holds.chain.remove(id);
    if (this.hold6Installed) await this.holds6?.chain.remove(id);
    await this.stub.close(id);
    await this.observers.close(id);
    await this.hold.close(id);
  }

  /** `keepRules` (a hand-over): the listeners close, the marking and redirect rules stay for the next agent to rebuild. */
  async stop(options: { keepRules?: boolean } = {}): Promise<void> {
    const step = async (what: string, work: () => Promise<unknown>) =>
      work().catch((error) => this.log.warn({ err: messageOf(error) }, `${what} failed during shutdown`));
    await step('closing the health stub', () => this.stub.stop());
    await step('closing the hold listeners', () => this.hold.stop());
    await step('closing the observer listeners', () => this.observers.stop());
    if (options.keepRules) return;
    await step('removing observer redirect rules', async () => {
      for (const chain of this.observerChainList()) await chain.uninstall();
    });
    await step('removing observer marking rules', async () => this.observerMarking?.remove());
    await step('removing redirect rules', async () => this.checks?.uninstall());
    await step('removing IPv6 redirect rules', async () => this.checks6?.uninstall());
    await step('removing hold rules', async () => (this.holdInstalled ? this.holds.chain.uninstall() : undefined));
    await step('removing IPv6 hold rules', async () => (this.hold6Installed ? this.holds6?.chain.uninstall() : undefined));
    await step('removing marking rules', async () => this.marking?.remove());
  }
}

/**
 * A user's uid through NSS (`getent passwd`), so users from LDAP or systemd's dynamic users are
 * found as the kernel will see them; a missing user is a config error, named. getent exits 2
 * for an unknown key.
 */
async function uidOf(user: string): Promise<number> {
  const { stdout, code } = await run('getent', ['passwd', user], { allowFailure: true, timeoutMs: 5000 });
  const fields = code === 0 ? stdout.trim().split('\n')[0]!.split(':') : [];
  const uid = fields[0] === user && /^\d+$/.test(fields[2] ?? '') ? Number(fields[2]) : Number.NaN;
  if (!Number.isInteger(uid)) throw new ConfigError(`healthChecks.fromUser: there is no user ${JSON.stringify(user)} on this node (getent passwd found none)`);
  return uid;
}

/** Only an instance that is asleep or on its way (and can come back) gets a positive answer. */
function stubStatus(state: string | undefined): StubStatus {
  if (state === 'pausing' || state === 'sleeping' || state === 'waking') return 'sleeping';
  if (state === 'failed') return 'failed';
  return 'other';
}

function holdState(state: string | undefined): HoldState {
  if (state === 'running') return 'serving';
  if (state === 'failed' || state === undefined) return 'failed';
  return 'waiting';
}
