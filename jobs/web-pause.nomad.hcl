# A web service that pauses when idle (doze.mode = "pause").
#
# Pause freezes the task's cgroup: the process keeps its memory and its
# sockets, the kernel keeps completing TCP handshakes into its accept queue,
# and a wake (thaw) takes about a millisecond. It frees CPU, not memory.
#
#   doze job validate jobs/web-pause.nomad.hcl
#   doze job run jobs/web-pause.nomad.hcl --nomad-addr http://127.0.0.1:4646

job "web" {
  type = "service"

  # Meta keys with dots need HCL's map syntax (`meta = { … }`): they are not
  # valid HCL identifiers. Job-level meta applies to every group and task;
  # narrower levels win.
  meta = {
    "doze.enabled" = "true"
  }

  group "web" {
    count = 2

    meta = {
      # Sleep after 30 s without client packets or unanswered requests.
      "doze.idle_timeout" = "30s"
      "doze.idle_policy"  = "requests"
      "doze.mode"         = "pause"
      # Hold the first packet while the task thaws, rather than letting the
      # client retransmit it a second later.
      "doze.wake" = "hold"
      # Once woken, stay up at least this long.
      "doze.min_awake" = "10s"
    }

    network {
      # Bridge mode: each allocation gets its own address and a host-side veth
      # on which doze counts the traffic that comes in.
      mode = "bridge"
      port "http" {
        to = 8080
      }
    }

    # doze needs a service with a check and a port: the port says where
    # traffic arrives; the check is what doze answers while the task sleeps,
    # so the service stays healthy in the catalog.
    service {
      name = "web"
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
        args  = ["-listen", ":8080", "-text", "hello from a sometimes sleeping web"]
        ports = ["http"]
      }

      resources {
        cpu    = 100
        memory = 64
      }
    }

    task "log-shipper" {
      # Lifecycle sidecars are never the managed task: doze freezes "app" only.
      lifecycle {
        hook    = "poststart"
        sidecar = true
      }

      driver = "docker"

      config {
        image = "busybox:1.36"
        args  = ["sh", "-c", "while true; do sleep 3600; done"]
      }

      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
