import test from 'ava';
import type { DozeError } from '../../agent/shared/errors.js';
import { hclJsonToApiJob, pascalCase } from '../../plugin/hcl-to-api-job.js';
import { loadJobspec } from '../../plugin/load-jobspec.js';
import { parseHclOffline } from '../../plugin/parse-hcl-offline.js';
import { jobFile } from './run-job-command.js';

const HCL = `
job "shop" {
  datacenters = ["dc1"]
  type        = "service"
  meta = {
    "doze.enabled" = true
    release        = 7
  }

  constraint {
    attribute = "\${attr.kernel.name}"
    value     = "linux"
  }

  update {
    max_parallel     = 1
    min_healthy_time = "10s"
  }

  group "api" {
    count = 3

    network {
      mode = "bridge"
      port "http" {
        to = 8080
      }
      port "admin" {
        static       = 9000
        host_network = "private"
      }
    }

    volume "data" {
      type   = "host"
      source = "shop-data"
    }

    service {
      name     = "api"
      port     = "http"
      tags     = ["v1"]
      provider = "nomad"
      check {
        type     = "tcp"
        interval = "1m30s"
        timeout  = "500ms"
        check_restart {
          limit = 3
          grace = "90s"
        }
      }
    }

    task "server" {
      driver = "exec"
      config {
        command = "/bin/server"
        args    = ["--port", "\${NOMAD_PORT_http}"]
      }
      env {
        MODE = "production"
      }
      template {
        data        = "hello"
        destination = "local/a.txt"
      }
      resources {
        cpu        = 500
        memory     = 256
        memory_max = 512
      }
      kill_timeout = "20s"
    }

    task "migrate" {
      driver = "exec"
      lifecycle {
        hook = "prestart"
      }
      config {
        command = "/bin/migrate"
      }
    }
  }
}
`;

test('HCL becomes Nomad API JSON: names, ports, durations, user maps', async (t) => {
  const job = (await parseHclOffline('shop.nomad.hcl', HCL)) as Record<string, any>;
  t.is(job.ID, 'shop');
  t.is(job.Name, 'shop');
  t.deepEqual(job.Datacenters, ['dc1']);
  t.deepEqual(job.Meta, { 'doze.enabled': 'true', release: '7' }, 'meta values are strings, as Nomad stores them');
  t.deepEqual(job.Constraints, [{ LTarget: '${attr.kernel.name}', RTarget: 'linux', Operand: '=' }]);
  t.deepEqual(job.Update, { MaxParallel: 1, MinHealthyTime: 10_000_000_000 });

  const [group] = job.TaskGroups;
  t.is(group.Name, 'api');
  t.is(group.Count, 3);
  t.deepEqual(group.Networks, [
    {
      Mode: 'bridge',
      DynamicPorts: [{ Label: 'http', Value: 0, To: 8080 }],
      ReservedPorts: [{ Label: 'admin', Value: 9000, To: 0, HostNetwork: 'private' }],
    },
  ]);
  t.deepEqual(group.Volumes, { data: { Name: 'data', Type: 'host', Source: 'shop-data' } });
  t.deepEqual(group.Services, [
    {
      Name: 'api',
      PortLabel: 'http',
      Tags: ['v1'],
      Provider: 'nomad',
      Checks: [{ Type: 'tcp', Interval: 90_000_000_000, Timeout: 500_000_000, CheckRestart: { Limit: 3, Grace: 90_000_000_000 } }],
    },
  ]);

  const [server, migrate] = group.Tasks;
  t.is(server.Name, 'server');
  t.is(server.Driver, 'exec');
  t.deepEqual(server.Config, { command: '/bin/server', args: ['--port', '${NOMAD_PORT_http}'] }, 'driver config keys stay as written');
  t.deepEqual(server.Env, { MODE: 'production' });
  t.deepEqual(server.Templates, [{ EmbeddedTmpl: 'hello', DestPath: 'local/a.txt' }], 'api/tasks.go Template: data → EmbeddedTmpl, destination → DestPath');
  t.deepEqual(server.Resources, { CPU: 500, MemoryMB: 256, MemoryMaxMB: 512 });
  t.is(server.KillTimeout, 20_000_000_000);
  t.deepEqual(migrate.Lifecycle, { Hook: 'prestart' });
});

test('a file must hold exactly one job', (t) => {
  const none = t.throws<DozeError>(() => hclJsonToApiJob({ variable: {} }, 'x.hcl'));
  t.is(none?.code, 'E_JOB_PARSE');
  t.regex(none!.message, /x\.hcl: expected exactly one job block, found 0/);
  const two = t.throws<DozeError>(() => hclJsonToApiJob({ job: { a: [{}], b: [{}] } }, 'x.hcl'));
  t.regex(two!.message, /found 2/);
});

test('HCL\'s JSON syntax is read like HCL', async (t) => {
  const file = await jobFile(t, 'web.nomad.json', {
    job: { web: { group: { web: { task: { app: { driver: 'exec', config: { command: '/bin/true' } } } } } } },
  });
  const { job, parsedBy } = await loadJobspec(file);
  t.is(parsedBy, 'json');
  t.like(job, { ID: 'web', TaskGroups: [{ Name: 'web', Tasks: [{ Name: 'app', Driver: 'exec', Config: { command: '/bin/true' } }] }] });
});

test('API JSON is taken with or without the outer "Job"', async (t) => {
  const bare = { ID: 'x', TaskGroups: [] };
  t.deepEqual((await loadJobspec(await jobFile(t, 'a.json', bare))).job, bare);
  t.deepEqual((await loadJobspec(await jobFile(t, 'b.json', { Job: bare }))).job, bare);
  const error = await t.throwsAsync<DozeError>(loadJobspec(await jobFile(t, 'c.json', { Jobs: [] })));
  t.is(error?.code, 'E_JOB_PARSE');
  const broken = await t.throwsAsync<DozeError>(loadJobspec(await jobFile(t, 'd.json', '{"Job": ')));
  t.regex(broken!.message, /d\.json is not valid JSON/);
});

test('PascalCase keeps Nomad\'s acronyms', (t) => {
  t.is(pascalCase('max_parallel'), 'MaxParallel');
  t.is(pascalCase('node_pool'), 'NodePool');
  t.is(pascalCase('ip'), 'IP');
  t.is(pascalCase('network_id'), 'NetworkID');
});

const API_NAMES_HCL = `
job "names" {
  periodic {
    crons            = ["*/15 * * * *"]
    prohibit_overlap = true
  }
  reschedule {
    attempts = 2
    interval = "1h"
  }
  spread {
    attribute = "\${node.datacenter}"
    weight    = 100
    target "dc1" {
      percent = 70
    }
  }
  group "g" {
    scaling {
      min = 0
      max = 3
      policy {
        cooldown = "1m"
      }
    }
    task "t" {
      driver = "exec"
      template {
        source          = "local/in.tpl"
        destination     = "secrets/app.env"
        env             = true
        left_delimiter  = "[["
        right_delimiter = "]]"
        error_on_missing_key = true
        wait {
          min = "2s"
          max = "10s"
        }
      }
      artifact {
        source      = "https://example.com/app.tar.gz"
        destination = "local/app"
        mode        = "any"
        options {
          checksum = "sha256:abc"
        }
      }
      resources {
        cpu  = 100
        disk = 300
      }
      service {
        port = "http"
        check {
          type         = "grpc"
          port         = "http"
          grpc_service = "app.Health"
          grpc_use_tls = true
          interval     = "10s"
          timeout      = "2s"
        }
      }
    }
  }
}
`;

test('blocks whose API names are not their HCL names in PascalCase get the real ones (api/tasks.go, api/jobs.go)', async (t) => {
  const job = await parseHclOffline('names.hcl', API_NAMES_HCL);
  t.deepEqual(job.Periodic, { Specs: ['*/15 * * * *'], ProhibitOverlap: true });
  t.like(job, { Reschedule: { Attempts: 2, Interval: 3_600_000_000_000 } });
  t.deepEqual(job.Spreads, [{ Attribute: '${node.datacenter}', Weight: 100, SpreadTarget: [{ Value: 'dc1', Percent: 70 }] }]);
  const group = (job.TaskGroups as Array<Record<string, unknown>>)[0]!;
  t.deepEqual(group.Scaling, { Min: 0, Max: 3, Policy: { cooldown: '1m' } }, 'scaling min/max are counts; the policy is the autoscaler\'s, verbatim');
  const task = (group.Tasks as Array<Record<string, unknown>>)[0]!;
  t.deepEqual(task.Templates, [{ SourcePath: 'local/in.tpl', DestPath: 'secrets/app.env', Envvars: true, LeftDelim: '[[', RightDelim: ']]', ErrMissingKey: true, Wait: { Min: 2_000_000_000, Max: 10_000_000_000 } }]);
  t.deepEqual(task.Artifacts, [{ GetterSource: 'https://example.com/app.tar.gz', RelativeDest: 'local/app', GetterMode: 'any', GetterOptions: { checksum: 'sha256:abc' } }]);
  t.deepEqual(task.Resources, { CPU: 100, DiskMB: 300 });
  const check = ((task.Services as Array<{ Checks: Array<Record<string, unknown>> }>)[0]!.Checks)[0]!;
  t.like(check, { Type: 'grpc', PortLabel: 'http', GRPCService: 'app.Health', GRPCUseTLS: true });
});

test('blocks the offline parser cannot map are refused with where they are, not dropped', async (t) => {
  const connect = `job "c" {\n  group "g" {\n    service {\n      port = "http"\n      connect {\n        sidecar_service {}\n      }\n    }\n    task "t" {\n      driver = "exec"\n    }\n  }\n}\n`;
  const error = await t.throwsAsync<DozeError>(parseHclOffline('c.hcl', connect));
  t.is(error?.code, 'E_JOB_PARSE');
  t.regex(error?.message ?? '', /group "g": the offline parser cannot render a "connect" block into Nomad's API JSON.*--nomad-addr/);
  const scaling = `job "s" {\n  group "g" {\n    task "t" {\n      driver = "exec"\n      scaling "cpu" {\n        max = 1000\n      }\n    }\n  }\n}\n`;
  t.regex((await t.throwsAsync<DozeError>(parseHclOffline('s.hcl', scaling)))?.message ?? '', /group "g" task "t": .*task "scaling" block/);
});
