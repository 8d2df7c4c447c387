# A virtual machine run by Nomad's qemu driver that is paused when idle
# (doze.mode = "pause", the default mode).
#
# QEMU is the task itself, so the agent stops and resumes the VM through QMP
# (`stop` / `cont`: the process stays, Nomad sees a running task) and, with
# doze.reclaim (on by default), pushes the guest's RAM out of memory while it
# is stopped. `doze job run` (or `doze job render`) appends to the args:
#
#   -qmp unix:local/doze-qmp.sock,server=on,wait=off
#   -object memory-backend-file,id=doze-ram,size=512M,mem-path=local/doze-ram,share=on
#   -machine memory-backend=doze-ram
#
# (the size is resources.memory; the paths are relative to the task directory,
# where the driver starts QEMU). Clients whose qemu plugin sets args_allowlist
# must allow "-qmp", "-object" and "-machine" (docs/qemu.md, "Nomad's qemu
# driver").
#
# Networking is the driver's usual user-mode networking: port_map forwards the
# allocated host port to the guest, and doze counts traffic on that host port.
#
#   doze job validate jobs/vm-pause.nomad.hcl
#   doze job render   jobs/vm-pause.nomad.hcl

job "vm-pause" {
  type = "service"

  group "vm" {
    meta = {
      "doze.enabled"      = "true"
      "doze.mode"         = "pause"
      "doze.idle_timeout" = "2m"
      # Page the guest's RAM out while it sleeps ("false": keep it resident
      # for a faster wake).
      "doze.reclaim" = "true"
    }

    network {
      port "http" {}
    }

    service {
      name = "vm-pause-http"
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
        image_path  = "local/guest.qcow2"
        accelerator = "kvm"
        # The driver forwards the "http" host port to the guest's port 80.
        port_map {
          http = 80
        }
        args = ["-smp", "2"]
      }

      artifact {
        source      = "https://example.com/images/guest.qcow2"
        destination = "local/guest.qcow2"
        mode        = "file"
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
