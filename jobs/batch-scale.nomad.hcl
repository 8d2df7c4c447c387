# A batch-style service scaled to zero when idle (doze.mode = "scale").
#
# Scale asks Nomad to set the group's count to 0 (POST /v1/job/:id/scale) and
# back to its count on traffic. It frees everything, memory included, but
# the wake is a cold start (schedule, pull, boot) and, at count 0, the
# group's services leave the Consul catalog, since no allocation is left to
# register them (hashicorp/nomad#19731). Clients must reach the job through
# something that does not depend on the catalog entry while it sleeps.
# Use it for work that is rare and tolerates a slow first answer: report
# rendering, exports, nightly tools.
#
#   doze job validate jobs/batch-scale.nomad.hcl

job "reports" {
  # Only service jobs can be scaled through the API.
  type = "service"

  group "renderer" {
    count = 1

    # The scale endpoint enforces the scaling block's bounds: 0 must be allowed.
    scaling {
      enabled = false
      min     = 0
      max     = 1
    }

    meta = {
      "doze.enabled"      = "true"
      "doze.mode"         = "scale"
      "doze.idle_timeout" = "15m"
      # "requests" (the default) keeps it awake while a render is in flight,
      # even when the client sends nothing while it waits for the answer.
      "doze.idle_policy" = "requests"
      # Stay up a while after a cold start: it was expensive.
      "doze.min_awake" = "30m"
    }

    network {
      mode = "bridge"
      port "http" {
        to = 9000
      }
    }

    service {
      name = "reports"
      port = "http"

      check {
        type     = "http"
        path     = "/ready"
        interval = "30s"
        timeout  = "5s"
      }
    }

    task "render" {
      driver = "exec"

      config {
        command = "local/render-server"
        args    = ["--listen", "0.0.0.0:9000"]
      }

      resources {
        cpu    = 1000
        memory = 512
      }
    }
  }
}
