import { ConfigError, DozeError, RuntimeError } from '../../shared/errors.js';
import { addTap, deleteLink, ipv4Addresses, linkExists, replaceAddress, replacePermanentNeighbour, setLinkUp } from '../../net/ip.js';
import { peerAddress } from './vm-registration.js';

/*
 * `doze vm run --tap-address CIDR`: the owner makes the VM's tap itself, so a node needs no tap
 * provisioned per VM (two allocations on one node name theirs apart, e.g.
 * ifname=dz${NOMAD_SHORT_ALLOC_ID}). The tap is created outside QEMU, as snapshot sleep needs
 * (it must outlive QEMU), with the host end of a /30 or /31 and a permanent neighbour entry for
 * the guest (so the first SYN to a sleeping VM reaches tc, not the ARP queue), and removed when
 * the owner stops, if the owner created it.
 */

export interface TapPlan {
  name: string;
  /** The host end, "10.213.7.1/30". */
  address: string;
  guestIp: string;
  /** The guest NIC's MAC, from the QEMU command line. */
  mac: string;
}

/** Reads the tap and the guest's MAC from the QEMU command line; a usage error says what is missing. */
export function planTap(qemuArgv: string[], cidr: string): TapPlan {
  const netdev = findTapNetdev(qemuArgv);
  if (!netdev) throw new ConfigError('--tap-address needs the VM on a tap: -netdev tap,id=ID,ifname=NAME,script=no,downscript=no');
  if (!/^[A-Za-z0-9_.@-]{1,15}$/.test(netdev.ifname)) throw new ConfigError(`tap name ${JSON.stringify(netdev.ifname)}: at most 15 letters, digits, "_", ".", "@" or "-"`);
  const mac = macOf(qemuArgv, netdev.id);
  if (!mac) {
    throw new ConfigError(
      `--tap-address needs the guest NIC's MAC for the tap's neighbour entry: add mac=52:54:00:xx:xx:xx to the -device with netdev=${netdev.id ?? '<id>'}`,
    );
  }
  let guestIp: string;
  try {
    guestIp = peerAddress(cidr);
  } catch {
    throw new ConfigError(`--tap-address ${JSON.stringify(cidr)}: expected the host end of a /30 or /31, e.g. 10.213.7.1/30`);
  }
  return { name: netdev.ifname, address: cidr, guestIp, mac };
}

function findTapNetdev(args: string[]): { id: string | undefined; ifname: string } | undefined {
  for (let i = 0; i < args.length - 1; i++) {
    if (args[i] !== '-netdev' && args[i] !== '-nic') continue;
    const [type, ...options] = args[i + 1]!.split(',');
    if (type !== 'tap') continue;
    const value = (key: string) => options.find((o) => o.startsWith(`${key}=`))?.slice(key.length + 1);
    const ifname = value('ifname');
    if (ifname) return { id: args[i] === '-nic' ? undefined : value('id'), ifname };
  }
  return undefined;
}

/** mac= of the -device on that netdev (or of a -nic tap). */
function macOf(args: string[], netdevId: string | undefined): string | undefined {
  const macPattern = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
  for (let i = 0; i < args.length - 1; i++) {
    const options = args[i + 1]!.split(',');
    const onIt = (args[i] === '-device' && netdevId !== undefined && options.includes(`netdev=${netdevId}`)) || (args[i] === '-nic' && options[0] === 'tap');
    if (!onIt) continue;
    const mac = options.find((o) => o.startsWith('mac='))?.slice(4);
    if (mac && macPattern.test(mac)) return mac;
  }
  return undefined;
}

/** The tap as the owner set it up; `remove` takes it away only if the owner created it. */
export class OwnedTap {
  private constructor(readonly plan: TapPlan, readonly created: boolean) {}

  static async ensure(plan: TapPlan): Promise<OwnedTap> {
    const exists = await linkExists(plan.name);
    if (exists) {
      // Provisioned by someone else: use it as it is, but never give it a second address.
      if (!(await ipv4Addresses(plan.name)).includes(plan.address)) {
        throw new ConfigError(`tap ${plan.name} already exists without ${plan.address}: drop --tap-address (doze.tap_address) to use it as it is, or remove the tap`);
      }
    } else {
      await tapStep(addTap(plan.name));
    }
    const tap = new OwnedTap(plan, !exists);
    try {
      await tapStep(replaceAddress(plan.address, plan.name));
      await tapStep(setLinkUp(plan.name));
      await tapStep(replacePermanentNeighbour(plan.guestIp, plan.mac, plan.name));
    } catch (error) {
      await tap.remove();
      throw error;
    }
    return tap;
  }

  async remove(): Promise<void> {
    if (this.created) await deleteLink(this.plan.name);
  }
}

/** A failed ip step is the tap's failure (E_TAP), naming the command and ip's stderr. */
async function tapStep(step: Promise<void>): Promise<void> {
  try {
    await step;
  } catch (error) {
    if (error instanceof DozeError && error.code === 'E_COMMAND') throw new RuntimeError('E_TAP', error.message, { cause: error });
    throw error;
  }
}
