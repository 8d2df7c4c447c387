# The doze agent: one per Nomad client node that should host sleeping allocations.
#
# Opt a node in with node meta, either in the client's config
#     client { meta { "doze.agent" = "true" } }
# or at run time (Nomad >= 1.5):
#     nomad node meta apply -node-id <id> doze.agent=true
# The same meta is what `doze job run` constrains managed groups to, so jobs
# only land where an agent can sleep and wake them.
#
# The agent needs root on the host: it attaches tc/eBPF programs to
# allocations' host-side veths (bpffs at /sys/fs/bpf), freezes task cgroups
# (/sys/fs/cgroup), and owns a few iptables rules; it finds docker tasks
# through Docker's socket (/var/run/docker.sock, read only). raw_exec gives it that
# directly (enable the raw_exec plugin in the client config). The Docker
# alternative is at the end of this file.
#
# The agent never manages its own allocation: this job carries no doze.* meta.

job "doze-agent" {
  type     = "system"
  priority = 90

  constraint {
    attribute = "${meta.doze.agent}"
    value     = "true"
  }

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  group "agent" {
    network {
      # Host network: the agent works in the host's namespace, beside the
      # veths of bridge-mode allocations.
      mode = "host"
      port "status" {
        static = 7070
      }
    }

    service {
      name     = "doze-agent"
      port     = "status"
      provider = "consul"

      check {
        type     = "http"
        path     = "/api/instances"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "agent" {
      driver = "raw_exec"

      config {
        # `doze` installed on the node (npm install -g, or an artifact block).
        command = "doze"
        args    = ["agent", "--config", "local/doze.json"]
      }

      # nomad.allocDir is the client's data_dir + "/alloc": qemu-driver tasks keep
      # the QMP socket doze pauses them through in their task directory there.
      # Discovery reads this node's allocations from the local Nomad agent and
      # their checks from the local Consul agent. Give the agent a token with
      # read-job on the namespaces it serves and submit-job for scale mode
      # (NOMAD_TOKEN / CONSUL_HTTP_TOKEN in its environment, e.g. from Vault
      # or Nomad variables).
      template {
        destination = "local/doze.json"
        data        = <<-EOT
          {
            "listen": "{{ env "NOMAD_ADDR_status" }}",
            "stub": { "listen": "127.0.0.1:7071" },
            "healthChecks": { "mark": "0x1", "fromUser": "consul" },
            "nomad": { "address": "http://127.0.0.1:4646", "allocDir": "/opt/nomad/data/alloc" },
            "consul": { "address": "http://127.0.0.1:8500" }
          }
        EOT
      }

      resources {
        cpu    = 200
        memory = 128
      }

      # A stopped agent must leave no sleeping instance behind: it wakes
      # everything and removes its rules on SIGTERM; give it time to.
      kill_timeout = "30s"
    }
  }
}

# Docker instead of raw_exec (the client must allow privileged containers and
# host volumes):
#
#   task "agent" {
#     driver = "docker"
#     config {
#       image        = "<your doze image>"
#       args         = ["agent", "--config", "/local/doze.json"]
#       privileged   = true
#       network_mode = "host"
#       pid_mode     = "host"
#       # cgroup v2: the host's cgroup namespace, so /proc/<pid>/cgroup of a docker task reads as
#       # the host sees it (Docker gives a container a private one there by default).
#       cgroupns     = "host"
#       # The alloc dir only for qemu-driver tasks (their QMP sockets; nomad.allocDir); Docker's
#       # socket and its namespaces (pause containers' SandboxKey) only for docker tasks (docs/docker.md).
#       volumes      = ["/sys/fs/bpf:/sys/fs/bpf", "/sys/fs/cgroup:/sys/fs/cgroup", "/var/run/netns:/var/run/netns",
#                       "/opt/nomad/data/alloc:/opt/nomad/data/alloc",
#                       "/var/run/docker.sock:/var/run/docker.sock", "/var/run/docker/netns:/var/run/docker/netns"]
#     }
#   }
