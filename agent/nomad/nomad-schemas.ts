import { z } from 'zod';

/*
 * The parts of Nomad's API JSON that doze reads, validated where they enter.
 * Field names are Nomad's (PascalCase, from its `api` Go package). Go encodes
 * nil slices and maps as null, so every collection is nullish. Big payloads
 * are loose objects: fields doze does not read pass through untouched, which
 * matters when the helper sends a job back to Nomad.
 */

const stringMap = z.record(z.string(), z.string()).nullish();

export const portSchema = z.looseObject({
  Label: z.string(),
  Value: z.number().int().optional(),
  /** Port inside the allocation's network namespace (bridge mode); 0 or -1 means "same as Value". */
  To: z.number().int().optional(),
  HostNetwork: z.string().optional(),
});

export const networkResourceSchema = z.looseObject({
  Mode: z.string().optional(),
  Device: z.string().optional(),
  /** The host's address for this network (not the allocation's bridge address). */
  IP: z.string().optional(),
  DynamicPorts: z.array(portSchema).nullish(),
  ReservedPorts: z.array(portSchema).nullish(),
});

export const serviceCheckSchema = z.looseObject({
  Name: z.string().optional(),
  Type: z.string(),
  PortLabel: z.string().optional(),
  Path: z.string().optional(),
  AddressMode: z.string().optional(),
  /** The task a group service's script check runs in (api/services.go TaskName, HCL `task`). */
  TaskName: z.string().optional(),
  /** Nanoseconds (Go time.Duration). */
  Interval: z.number().optional(),
  Timeout: z.number().optional(),
  /** "http" (default) or "https" for HTTP checks. */
  Protocol: z.string().optional(),
  TLSSkipVerify: z.boolean().optional(),
  TLSServerName: z.string().optional(),
  GRPCUseTLS: z.boolean().optional(),
  /** "require_healthy" (default), "ignore_warnings" or "ignore" (readiness: nomad/structs/checks.go). */
  OnUpdate: z.string().optional(),
  CheckRestart: z.looseObject({ Limit: z.number().int().optional(), Grace: z.number().optional() }).nullish(),
});

export const serviceSchema = z.looseObject({
  Name: z.string().optional(),
  PortLabel: z.string().optional(),
  Provider: z.string().optional(),
  AddressMode: z.string().optional(),
  TaskName: z.string().optional(),
  Checks: z.array(serviceCheckSchema).nullish(),
});

export const constraintSchema = z.looseObject({
  LTarget: z.string().optional(),
  RTarget: z.string().optional(),
  Operand: z.string(),
});

export const taskSchema = z.looseObject({
  Name: z.string().min(1),
  Driver: z.string().min(1),
  Meta: stringMap,
  Services: z.array(serviceSchema).nullish(),
  Lifecycle: z.looseObject({ Hook: z.string().optional(), Sidecar: z.boolean().optional() }).nullish(),
  Resources: z.looseObject({ Networks: z.array(networkResourceSchema).nullish() }).nullish(),
  Constraints: z.array(constraintSchema).nullish(),
});

export const taskGroupSchema = z.looseObject({
  Name: z.string().min(1),
  Count: z.number().int().nonnegative().nullish(),
  Meta: stringMap,
  Tasks: z.array(taskSchema).min(1),
  Networks: z.array(networkResourceSchema).nullish(),
  Services: z.array(serviceSchema).nullish(),
  Constraints: z.array(constraintSchema).nullish(),
  Scaling: z.looseObject({ Min: z.number().int().nullish(), Max: z.number().int().nullish(), Enabled: z.boolean().nullish() }).nullish(),
});

export const jobSchema = z.looseObject({
  ID: z.string().min(1),
  Name: z.string().optional(),
  Namespace: z.string().optional(),
  Region: z.string().optional(),
  /** service (default), batch, system, sysbatch. */
  Type: z.string().nullish(),
  Meta: stringMap,
  Constraints: z.array(constraintSchema).nullish(),
  TaskGroups: z.array(taskGroupSchema).min(1),
  ModifyIndex: z.number().int().optional(),
  Version: z.number().int().optional(),
  /** Set by `nomad job stop` (a new version of the job, kept until garbage collection). */
  Stop: z.boolean().optional(),
});

/** `AllocatedResources.Shared.Ports[]`: the ports the scheduler gave an allocation. */
export const portMappingSchema = z.looseObject({
  Label: z.string(),
  Value: z.number().int(),
  To: z.number().int().optional(),
  /** The host's address the port is bound on. */
  HostIP: z.string().optional(),
});

export const allocationSchema = z.looseObject({
  ID: z.string().min(1),
  Namespace: z.string().optional(),
  Name: z.string().optional(),
  NodeID: z.string(),
  NodeName: z.string().optional(),
  JobID: z.string().min(1),
  /** Present on reads; Nomad strips it from event stream payloads to keep events small. */
  Job: jobSchema.nullish(),
  TaskGroup: z.string().min(1),
  /** run | stop | evict */
  DesiredStatus: z.string(),
  /** pending | running | complete | failed | lost | unknown */
  ClientStatus: z.string(),
  TaskStates: z.record(z.string(), z.looseObject({ State: z.string().optional() }).nullable()).nullish(),
  AllocatedResources: z
    .looseObject({
      Tasks: z.record(z.string(), z.looseObject({ Networks: z.array(networkResourceSchema).nullish() }).nullable()).nullish(),
      Shared: z
        .looseObject({
          Networks: z.array(networkResourceSchema).nullish(),
          Ports: z.array(portMappingSchema).nullish(),
        })
        .nullish(),
    })
    .nullish(),
  /** Bridge/CNI allocations: Address is the allocation's own IP on the bridge. */
  NetworkStatus: z.looseObject({ InterfaceName: z.string().optional(), Address: z.string().optional(), AddressIPv6: z.string().optional() }).nullish(),
  CreateIndex: z.number().int().nonnegative(),
  ModifyIndex: z.number().int().nonnegative(),
});

/** `AllocDeploymentStatus`: set once a deployment has judged the allocation (Healthy stays null until then). */
export const allocDeploymentStatusSchema = z.looseObject({
  Healthy: z.boolean().nullish(),
  Timestamp: z.string().optional(),
  Canary: z.boolean().optional(),
});

/** `AllocListStub`, as `GET /v1/job/:id/allocations` lists them (no Job, no NetworkStatus, no DeploymentID). */
export const allocationStubSchema = z.looseObject({
  ID: z.string().min(1),
  Namespace: z.string().optional(),
  Name: z.string().optional(),
  NodeID: z.string(),
  JobID: z.string().min(1),
  TaskGroup: z.string().min(1),
  DesiredStatus: z.string(),
  ClientStatus: z.string(),
  TaskStates: z.record(z.string(), z.looseObject({ State: z.string().optional() }).nullable()).nullish(),
  DeploymentStatus: allocDeploymentStatusSchema.nullish(),
  CreateIndex: z.number().int().nonnegative(),
  ModifyIndex: z.number().int().nonnegative(),
});

/**
 * `GET /v1/allocation/:id/checks` (Nomad ≥ 1.4): the allocation's Nomad-provider
 * checks by id, each with Status "success" | "failure" | "pending" and Mode
 * "healthiness" | "readiness" (`on_update = "ignore"`: nomad/structs/checks.go).
 * `null`, not `{}`, for an allocation without any: the client's check store
 * returns a nil map (client/serviceregistration/checks/checkstore/shim.go List).
 */
export const allocationChecksSchema = z
  .record(
    z.string(),
    z.looseObject({ Status: z.string(), Mode: z.string().optional(), Check: z.string().optional(), Service: z.string().optional(), Output: z.string().optional() }),
  )
  .nullable();

/**
 * `GET /v1/job/:id/deployment`: the job's latest deployment, `null` when it
 * never had one. Active while running, paused, blocked, unblocking,
 * initializing or pending (nomad/structs/deployment.go Active).
 */
export const deploymentSchema = z
  .looseObject({
    ID: z.string(),
    Status: z.string(),
    StatusDescription: z.string().optional(),
    JobCreateIndex: z.number().int().optional(),
  })
  .nullable();

export const ACTIVE_DEPLOYMENT_STATUSES = new Set(['running', 'paused', 'blocked', 'unblocking', 'initializing', 'pending']);

export const jobRegisterResponseSchema = z.looseObject({
  EvalID: z.string(),
  EvalCreateIndex: z.number().int().optional(),
  JobModifyIndex: z.number().int().optional(),
  Warnings: z.string().optional(),
});

/** One frame of `/v1/event/stream`; `{}` (no Index, no Events) is a heartbeat. */
export const eventFrameSchema = z.looseObject({
  Index: z.number().int().nonnegative().optional(),
  Events: z.array(z.unknown()).nullish(),
});

export const eventSchema = z.looseObject({
  Topic: z.string(),
  Type: z.string(),
  Key: z.string(),
  Namespace: z.string().optional(),
  FilterKeys: z.array(z.string()).nullish(),
  Index: z.number().int().nonnegative(),
  Payload: z.record(z.string(), z.unknown()),
});

/**
 * `GET /v1/agent/self`: Nomad's agentSelf struct has lower-case JSON keys
 * (`config`, `member`, `stats`); stats are string maps per subsystem, and a
 * client agent's `stats.client.node_id` is its node id.
 */
export const agentSelfSchema = z.looseObject({
  config: z
    .looseObject({
      Region: z.string().nullish(),
      Datacenter: z.string().nullish(),
      /**
       * The agent config's version.VersionInfo (`{ Revision, Version, VersionPrerelease, VersionMetadata }`,
       * command/agent/config.go); the API docs' old sample has it as a string beside VersionPrerelease.
       */
      Version: z.union([z.string(), z.looseObject({ Version: z.string().optional(), VersionPrerelease: z.string().nullish() })]).nullish(),
    })
    .nullish(),
  member: z.looseObject({ Name: z.string().optional() }).nullish(),
  stats: z.record(z.string(), z.record(z.string(), z.string()).nullish()).nullish(),
});

export interface NomadAgentSelf {
  nodeId: string;
  name: string | undefined;
  region: string | undefined;
  datacenter: string | undefined;
}

export type NomadPort = z.infer<typeof portSchema>;
export type NomadNetworkResource = z.infer<typeof networkResourceSchema>;
export type NomadServiceCheck = z.infer<typeof serviceCheckSchema>;
export type NomadService = z.infer<typeof serviceSchema>;
export type NomadConstraint = z.infer<typeof constraintSchema>;
export type NomadTask = z.infer<typeof taskSchema>;
export type NomadTaskGroup = z.infer<typeof taskGroupSchema>;
export type NomadJob = z.infer<typeof jobSchema>;
export type NomadAllocation = z.infer<typeof allocationSchema>;
export type NomadJobRegisterResponse = z.infer<typeof jobRegisterResponseSchema>;
export type NomadAllocationStub = z.infer<typeof allocationStubSchema>;
export type NomadAllocationChecks = NonNullable<z.infer<typeof allocationChecksSchema>>;
export type NomadDeployment = NonNullable<z.infer<typeof deploymentSchema>>;
