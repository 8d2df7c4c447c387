/*
 * Every code a DozeError carries, declared once with what it means (as agent/nomad/meta-keys.ts
 * declares the doze.* keys): callers and tests match on `error.code`, so a code is a contract.
 * DozeError takes only these; test/shared/error-codes.test.ts fails on a declared code nothing raises.
 */
export const ERROR_CODES = {
  // The user's input (exit code 2 where the CLI reports it).
  E_CONFIG: 'the config file, a flag or a variable is wrong; the message names the field and the fix',
  E_USAGE: 'a doze command was called wrongly (unknown subcommand, missing argument)',
  E_JOB_PARSE: 'a jobspec (HCL or JSON) could not be read as a Nomad job',
  // The node: tools, build, kernel objects.
  E_MISSING_TOOL: 'a command doze runs is not installed; the message names its Debian package',
  E_COMMAND: 'a command doze ran (ip, tc, iptables) failed; the message carries its stderr',
  E_NOT_BUILT: 'a part `make build` makes (doze-maps, the eBPF object) is missing',
  E_ADDRESS: 'an address is not the IPv4 address its caller needs',
  E_BPF_LOAD: "doze's tc programs could not be loaded (an object from another build, a kernel without what they need)",
  E_TC_ATTACH: "doze's tc programs could not be attached to an interface (it does not exist, or the kernel refused)",
  E_STALE_PINS: 'pinned maps left by another doze version have another layout; remove them',
  E_LOCK: 'another agent holds this bpffs (one agent per set of pinned maps)',
  E_PROC: 'reading /proc about another process failed',
  E_MAPS: 'doze-maps, the map reader and writer, failed or answered nonsense',
  E_WAKE_EVENTS: 'the wake-event reader failed',
  E_DEADLINE: 'an operation did not finish within its deadline',
  E_NETNS_MISSING: "an allocation's network namespace is gone",
  E_NETNS_LINK: "an allocation's host-side interface could not be found",
  E_TAP: "a VM's tap device could not be set up",
  // Instances and their management.
  E_INSTANCE_TAKEN: 'an instance id or traffic key is already managed',
  E_INSTANCE_UNKNOWN: 'an instance the detector did not make was handed to it',
  E_STUB_LISTEN: 'the health stub could not listen for an instance',
  E_STUB_TLS: "the health stub's TLS certificate could not be made",
  E_STUB_FAILED: "the stub refuses an instance's checks: its wake failed",
  E_HOLD_LISTEN: 'the hold listener could not listen for an instance',
  E_OBSERVER_LISTEN: "the observers' listener (an instance's last metrics while it sleeps) could not listen for it",
  // Runtimes.
  E_RUNTIME_MISSING: "a runtime's workload (cgroup, job) is not there",
  E_RUNTIME_IO: "reading or writing a runtime's files failed",
  E_RUNTIME_HELPER: "a runtime's helper process failed",
  E_HANDLE: "a runtime handle could not be read, fits no runtime, or could not be written",
  E_OOM_KILLED: 'the workload was killed for memory while frozen',
  E_ENTRY_WATCH: "a sleeper's cgroup.procs could not be watched for processes entering it (inotify watches used up)",
  E_SCALE_BLOCKED: 'Nomad refused to scale the group (a deployment, a policy)',
  E_RECLAIM: "pushing a sleeper's memory out failed",
  E_WORKING_SET: "recording or prefetching a VM's working set failed",
  E_FAKE_PAUSE: 'the fake runtime was told to fail its pause (tests)',
  E_FAKE_RESUME: 'the fake runtime was told to fail its resume (tests)',
  // QEMU and its owner (doze vm).
  E_QEMU_SPAWN: 'QEMU could not be started',
  E_QEMU_EXITED: 'QEMU exited',
  E_QMP_CONNECT: "QEMU's monitor socket could not be reached",
  E_QMP_CLOSED: "QEMU's monitor connection closed",
  E_QMP_COMMAND: 'QEMU refused a monitor command',
  E_QMP_PROTOCOL: 'QEMU answered something its monitor protocol does not say',
  E_MIGRATE: "saving or restoring a VM's state failed",
  E_OWNER: "a VM's owner (doze vm run) failed an operation",
  E_OWNER_CONNECT: "a VM owner's control socket could not be reached",
  E_OWNER_CLOSED: "a VM owner's control connection closed",
  E_OWNER_STATE: 'a VM owner was asked for what its state does not allow',
  E_OWNER_STOPPING: 'a VM owner is stopping',
  E_PROTOCOL: "a request on a VM owner's control socket was malformed",
  E_SLEEP: "a VM owner's sleep failed",
  E_WAKE: "a VM owner's wake failed",
  // Firecracker and Cloud Hypervisor.
  E_VMM_LAUNCH: 'the VMM could not be started',
  E_VMM_UNREACHABLE: "the VMM's API socket is missing or nothing accepts on it: the VMM process is gone",
  E_VMM_HTTP: "the VMM answered with an error status; the status and its message are kept",
  E_VMM_RESPONSE: 'the VMM answered 2xx with a body doze cannot use',
  E_VMM_STATE: 'the VM is in a state the operation cannot start from (booted elsewhere, shut down)',
  // Nomad and Consul.
  E_NOMAD_UNREACHABLE: 'Nomad could not be reached (connection refused, reset, timed out, TLS failure): nothing was learned',
  E_NOMAD_HTTP: "Nomad answered with a non-2xx status; the status and Nomad's message are kept",
  E_NOMAD_RESPONSE: 'Nomad answered 2xx with a body (or headers) doze cannot use',
  E_NOMAD_STREAM_REFUSED: "the event stream answered 200 and closed before its first heartbeat, repeatedly: Nomad >= 1.11.2's ACL refusal; discovery polls instead",
  E_CONSUL_UNREACHABLE: 'Consul could not be reached (connection refused, reset, timed out, TLS failure)',
  E_CONSUL_HTTP: 'Consul answered with a non-2xx status',
  E_CONSUL_RESPONSE: 'Consul answered 2xx with a body doze cannot use',
  // The Docker engine (agent/docker/; read only).
  E_DOCKER_UNREACHABLE: "the Docker engine's socket is missing, refuses, or missed the call's deadline: nothing was learned",
  E_DOCKER_STATUS: "the Docker engine answered with a non-2xx status (404: no such container); the status and its message are kept",
  E_DOCKER_RESPONSE: 'the Docker engine answered something its API does not document',
  // Raised only by the test doubles and harnesses (test/), declared here so they are DozeErrors too.
  E_TEST: 'a test harness injected a failure',
  E_CLOSED: "a test channel's connection closed",
  E_DOUBLE: 'a test double could not do its own part (listen, start)',
  E_CHECKER_WORKER: "the Consul double's check runner worker failed",
  E_CHECKER_STOPPED: "the Consul double's check runner is stopped",
  E_CHECK_INVALID: 'the Consul double was given a check Consul would refuse',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** One upstream's codes (E_NOMAD_*, E_CONSUL_*, E_VMM_*): what its error class may carry. */
export type UpstreamErrorCode<Prefix extends string> = Extract<ErrorCode, `${Prefix}${string}`>;

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ERROR_CODES, code);
}
