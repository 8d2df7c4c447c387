# A web service that gives its memory back while it sleeps (doze.reclaim).
#
# The task is frozen when idle, as with doze.mode = "pause"; after
# doze.reclaim_after asleep the agent pushes its memory out to the node's swap
# (docs/memory.md), and the pages fault back as the thawed process touches
# them. The node needs swap (zram, or zswap in front of a swap file).
#
# Nomad places allocations by their reserved memory, not by what they use, so
# freed memory only lets the node take more allocations when the job reserves
# little and may use more: memory oversubscription. This task reserves 20 MiB
# (about what it holds asleep) and may grow to 512 MiB awake. Enable it once
# per cluster:
#
#   nomad operator scheduler set-config -memory-oversubscription=true
#   doze job validate jobs/web-reclaim.nomad.hcl

job "web-reclaim" {
  type = "service"

  meta = {
    "doze.enabled" = "true"
  }

  group "web" {
    meta = {
      "doze.idle_timeout"  = "30s"
      "doze.reclaim"       = "true"
      # Only a sleep longer than this pays for the reclaim (and for the page
      # faults after it); an instance that wakes often never does.
      "doze.reclaim_after" = "60s"
    }

    network {
      mode = "bridge"
      port "http" {
        to = 8080
      }
    }

    service {
      name = "web-reclaim"
      port = "http"

      check {
        type     = "http"
        path     = "/health"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "app" {
      driver = "docker"

      config {
        image = "hashicorp/http-echo:1.0"
        args  = ["-listen", ":8080", "-text", "hello from a web that sleeps in 20 MiB"]
        ports = ["http"]
      }

      resources {
        cpu        = 100
        # Reserved: what the scheduler counts. memory_max: the hard limit awake.
        memory     = 20
        memory_max = 512
      }
    }
  }
}
