# A virtual machine that is snapshotted when idle (doze.mode = "snapshot").
#
# Snapshot saves the VM's device state (and its RAM, when RAM is not already
# file-backed) and frees its memory; a wake restores it. With QEMU, file-backed
# guest RAM makes both cheap: the snapshot writes only device state (KiB) and
# a restore maps the RAM file back (measured under TCG: about 0.1 s to sleep,
# 0.3 s to wake; KVM is faster).
#
# Nomad's qemu driver gives the VM no interface of its own: clients and
# checks reach a host port that QEMU forwards into the guest (user-mode
# networking), so doze attributes traffic by host address and port.
#
#   doze job validate jobs/vm-snapshot.nomad.hcl

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

    network {
      port "http" {}
    }

    service {
      name = "vm-http"
      port = "http"

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
        port_map {
          http = 80
        }
        # doze drives the VM over QMP; the socket lives in the task dir (keep
        # its path short: unix socket paths are limited to 107 bytes). Allow
        # "-qmp" in the client's qemu args_allowlist.
        args = ["-qmp", "unix:${NOMAD_TASK_DIR}/dz-qmp.sock,server=on,wait=off"]
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
