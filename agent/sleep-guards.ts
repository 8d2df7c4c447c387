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
import { ConfigError, messageOf } from './shared/errors.js';
import { StubServer, type StubStatus } from './health/stub-server.js';
import { HoldServer, type HoldState } from './hold/hold-server.js';
import type { Logger } from './shared/log.js';
import { CheckMarking } from './netfilter/check-marking.js';
import { checkRedirect, holdRedirect, type DnatChain } from './netfilter/dnat-chain.js';
import { routeSource } from './netfilter/route-source.js';
import { run } from './process/exec.js';
import { hostOf, portOf } from './sources/ipv4.js';
import { describeFailure } from './detector/reasons.js';

/**
 * What the guards ask of the detector: its instances to read, and what they report back (a wake,
 * a check answered, connections held, a hold wake's first response). The detector writes it all.
 */
export type SleepGuardsContext = Pick<Detector, 'get' | 'wake' | 'countCheckAnswered' | 'noteHeld' | 'reportFirstResponse'>;

export class SleepGuards implements SleepHooks {
  readonly stub: StubServer;
  readonly hold: HoldServer;
  readonly guardChecks: boolean;
  private marking: CheckMarking | undefined;
  private checks: DnatChain | undefined;
  private readonly holds: ReturnType<typeof holdRedirect>;
  private holdInstalled = false;
  /** Where each instance's listeners live (the route's local address): looked up once, not per sleep. */
  private readonly listenHosts = new Map<string, string>();
  private readonly keyPairs = new Map<string, Promise<{ key: Buffer; cert: Buffer }>>();

  constructor(private readonly config: DozeConfig, context: SleepGuardsContext, private readonly log: Logger) {
    const c = config.healthChecks;
    this.guardChecks = c.fromUid !== undefined || c.fromUser !== undefined || c.fromSources.length > 0;
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
    this.holds = holdRedirect(c.mark, config.netfilter.chainPrefix);
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

  /** Marking and the check redirect exist only when checks can be identified. */
  async install(): Promise<void> {
    const c = this.config.healthChecks;
    if (this.guardChecks) {
      const fromUid = c.fromUid ?? (c.fromUser === undefined ? undefined : await uidOf(c.fromUser));
      this.marking = new CheckMarking({ mark: c.mark, fromUid, fromSources: c.fromSources }, this.config.netfilter.chainPrefix);
      await this.marking.install();
      this.checks = checkRedirect(c.mark, this.config.netfilter.chainPrefix);
      await this.checks.install();
    }
  }

  async beforeSleep(instance: ReadonlyInstance): Promise<void> {
    const needHost = this.checks !== undefined || instance.wake === 'hold';
    if (!needHost) return;
    const port = portOf(instance.config.address);
    // A host port is reached on any of the node's addresses (127.0.0.1 too, for QEMU's hostfwd).
    const targets = [
      instance.onHostPort ? { port } : { ip: hostOf(instance.config.address), port },
      ...instance.config.checkAddresses.map((a) => ({ ip: hostOf(a), port: portOf(a) })),
    ];
    let host = this.listenHosts.get(instance.id);
    if (host === undefined) {
      host = (await routeSource(hostOf(instance.config.address))) ?? this.stub.host;
      this.listenHosts.set(instance.id, host);
    }
    if (this.checks) {
      const to = await this.stub.open(instance.id, host);
      for (const target of targets) await this.checks.add(instance.id, { ...target, toHost: host, toPort: to });
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
    }
  }

  async awake(instance: ReadonlyInstance): Promise<void> {
    await this.checks?.remove(instance.id);
    this.stub.closeConnections(instance.id);
    if (this.holdInstalled) await this.holds.chain.remove(instance.id);
    // Awake by now: what was held goes through.
    this.hold.release(instance.id);
  }

  async wakeFailed(instance: ReadonlyInstance, reason: string): Promise<void> {
    // Refuse from now on: Consul goes critical, Nomad reschedules; held clients learn at once.
    this.stub.markFailed(instance.id, reason);
    this.hold.fail(instance.id);
    if (this.holdInstalled) await this.holds.chain.remove(instance.id);
  }

  /** An instance leaves management: its rules and listeners go with it. */
  async release(id: string): Promise<void> {
    this.listenHosts.delete(id);
    await this.checks?.remove(id);
    if (this.holdInstalled) await this.holds.chain.remove(id);
    await this.stub.close(id);
    await this.hold.close(id);
  }

  /** `keepRules` (a hand-over): the listeners close, the marking and redirect rules stay for the next agent to rebuild. */
  async stop(options: { keepRules?: boolean } = {}): Promise<void> {
    const step = async (what: string, work: () => Promise<unknown>) =>
      work().catch((error) => this.log.warn({ err: messageOf(error) }, `${what} failed during shutdown`));
    await step('closing the health stub', () => this.stub.stop());
    await step('closing the hold listeners', () => this.hold.stop());
    if (options.keepRules) return;
    await step('removing redirect rules', async () => this.checks?.uninstall());
    await step('removing hold rules', async () => (this.holdInstalled ? this.holds.chain.uninstall() : undefined));
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
