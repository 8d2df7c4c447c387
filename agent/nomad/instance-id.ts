/*
 * The instance id doze gives a Nomad allocation. Discovery names the instances it
 * manages by it, and `doze vm run --register` (runtimes/qemu/vm-registration.ts)
 * names the VM it registers by it, so the allocation that stops finds its instance.
 */

/** "<job>.<group>.<alloc id prefix>", within the agent's rule for ids: 1-64 of [A-Za-z0-9_.-]. */
export function instanceId(jobId: string, group: string, allocId: string): string {
  const clean = (text: string) => text.replace(/[^A-Za-z0-9_-]+/g, '_');
  const suffix = `.${allocId.replace(/[^A-Za-z0-9]/g, '').slice(0, 8)}`;
  return `${clean(jobId)}.${clean(group)}`.slice(0, 64 - suffix.length) + suffix;
}
