# The doze agent: one per Nomad client node that should host sleeping allocations.
#
#   nomad job run -var release_url=<URL of the tarball> -var release_checksum=<its sha256> jobs/doze-agent.nomad.hcl
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
# alternative is at the end of this file. Nomad >= 1.7 (the agent refuses older:
# their task cgroup layout differs).
#
# Secrets, before the first run (the template below waits for them):
#   nomad var put nomad/jobs/doze-agent status_token=$(openssl rand -hex 32) consul_token=<Consul ACL token>
# status_token guards the status API's actions (it listens on the node's address, so the agent
# refuses to start without one); consul_token needs service:write on the services it passes checks
# for (docs/nomad.md). The Nomad token is the task's workload identity (identity { env = true }):
# bind it a policy with read-job on the namespaces served (plus scale-job for scale mode):
#   nomad acl policy apply -job doze-agent doze-agent docs/doze-agent-policy.hcl
# The agent reads NOMAD_TOKEN and CONSUL_HTTP_TOKEN from its environment as Nomad's and Consul's
# own clients do (a token in the config file wins).
#
# The agent never manages its own allocation: this job carries no doze.* meta.

variable "release_url" {
  description = "where your nodes fetch the dist tarball (make dist: doze-<version>-linux-<arch>.tar.gz), e.g. https://releases.example.com/doze-0.1.0-linux-x86_64.tar.gz"
  type        = string
}

variable "release_checksum" {
  description = "its SHA-256 (the .sha256 file make dist writes beside it)"
  type        = string
}

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

  # A rolling update replaces one node's agent at a time; the old agent leaves its sleepers asleep
  # for the new one to adopt (it asks Nomad whether a newer version of this job follows it), while
  # `nomad job stop doze-agent` wakes everything (README "One agent per node, and crashes").
  update {
    max_parallel = 1
    stagger      = "10s"
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

    # The one Consul registration of the agent (its own, consul.register, is off below).
    service {
      name     = "doze-agent"
      port     = "status"
      provider = "consul"

      check {
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "agent" {
      driver = "raw_exec"

      artifact {
        source      = var.release_url
        destination = "local/doze"
        options {
          checksum = "sha256:${var.release_checksum}"
        }
      }

      config {
        # The release carries its own Node.js runtime, BPF object and helpers (make dist).
        command = "local/doze/doze"
        args    = ["agent", "--config", "local/doze.json"]
      }

      # NOMAD_TOKEN: this task's workload identity.
      identity {
        env = true
      }

      # DOZE_TOKEN and CONSUL_HTTP_TOKEN from the job's Nomad variable (see the top).
      template {
        destination = "secrets/tokens.env"
        env         = true
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/doze-agent" }}
          DOZE_TOKEN={{ .status_token }}
          CONSUL_HTTP_TOKEN={{ .consul_token }}
          {{ end }}
        EOT
      }

      # nomad.allocDir is the client's data_dir + "/alloc": qemu-driver tasks keep
      # the QMP socket doze pauses them through in their task directory there.
      template {
        destination = "local/doze.json"
        data        = <<-EOT
          {
            "listen": "{{ env "NOMAD_ADDR_status" }}",
            "stub": { "listen": "127.0.0.1:7071" },
            "healthChecks": { "mark": "0x1", "fromUser": "consul" },
            "nomad": { "address": "http://127.0.0.1:4646", "allocDir": "/opt/nomad/data/alloc" },
            "consul": { "address": "http://127.0.0.1:8500", "register": false }
          }
        EOT
      }

      resources {
        cpu = 500
        # Measured RSS (README "Benchmarks"): 80, 111 and 118 MiB managing 10, 100 and 1,000
        # instances; 122 MiB at most in a 2-minute soak of 100 busy instances; 150-270 MiB in the
        # 10-minute soak of 50 (510,198 requests; max 269 MiB). 384 MiB is that maximum, the highest
        # figure measured, with 40 % headroom: below it, Nomad's limit would OOM-kill the agent under load.
        memory = 384
      }

      # A final stop wakes everything and removes its rules; give it time to.
      kill_timeout = "30s"
    }
  }
}

# Docker instead of raw_exec (the client must allow privileged containers and
# host volumes). The image is `make image` (Dockerfile: FROM scratch, the same
# release); load it on each node (docker load -i build/doze-image-<version>.tar) or push
# it to your registry and name it here.
#
#   task "agent" {
#     driver = "docker"
#     config {
#       image        = "doze:0.1.0"
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
#                       "/run/doze:/run/doze", "/opt/nomad/data/alloc:/opt/nomad/data/alloc",
#                       "/var/run/docker.sock:/var/run/docker.sock", "/var/run/docker/netns:/var/run/docker/netns"]
#     }
#   }
