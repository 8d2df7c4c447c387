# A virtual machine that is snapshotted when idle (doze.mode = "snapshot").
#
# Snapshot saves the VM's device state and frees its memory: QEMU exits while
# the VM sleeps and its guest RAM, kept in a file, leaves memory; a wake
# restores it (measured under TCG: about 0.1 s to sleep, 0.3 s to wake; KVM is
# faster). QEMU exiting would be a dead task to Nomad, so `doze job run` (or
# `doze job render`) turns this ordinary qemu task into a raw_exec task that
# runs it under `doze vm run`, which owns QEMU, registers the VM with the
# node's agent and unregisters it on stop (docs/qemu.md, "From a qemu task").
#
# The VM sits on a tap, not on the qemu driver's user-mode networking: doze
# counts traffic on the VM's own interface, and a user-mode port forward
# closes with QEMU. The tap must exist before the task starts, with the host
# side of a /30 on it (here 10.213.7.1/30; the guest is 10.213.7.2 and serves
# on port 80): see docs/qemu.md for a node setup. Or let doze vm make it:
# "doze.tap_address" = "10.213.7.1/30" in the meta below (with the MAC on the
# -device), and name the tap per allocation for several VMs on one node.
#
#   doze job validate jobs/vm-snapshot.nomad.hcl
#   doze job render   jobs/vm-snapshot.nomad.hcl

job "vm" {
  type = "service"

  group "vm" {
    meta = {
      "doze.enabled"      = "true"
      "doze.mode"         = "snapshot"
      # A restore costs more than a thaw: wait longer before sleeping, and
      # count open connections (e.g. an SSH session) as activity.
      "doze.idle_timeout" = "5m"
      "doze.idle_policy"  = "connections"
      # ...but a connection that has been silent for an hour does not keep
      # the VM up.
      "doze.max_awake" = "1h"
      "doze.wake"      = "hold"
    }

    service {
      name = "vm-http"
      # The guest is reached on its tap address and its own port, not on a
      # host port: doze wakes the VM on this port.
      address = "10.213.7.2"
      port    = "80"

      check {
        type     = "tcp"
        interval = "15s"
        timeout  = "3s"

        # A restart on a failed check would kill a sleeping VM: keep it off
        # (limit 0) or give it a grace longer than a wake.
        check_restart {
          limit = 0
        }
      }
    }

    task "guest" {
      driver = "qemu"

      config {
        image_path        = "local/guest.qcow2"
        accelerator       = "kvm"
        graceful_shutdown = true
        # The tap doze vm attaches the VM to (created on the node beforehand).
        args = [
          "-netdev", "tap,id=net0,ifname=dzvm0t,script=no,downscript=no",
          "-device", "virtio-net-pci,netdev=net0",
        ]
      }

      artifact {
        source      = "https://example.com/images/guest.qcow2"
        destination = "local/guest.qcow2"
        mode        = "file"
      }

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
