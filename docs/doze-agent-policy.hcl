# ACL policy for the doze agent's workload identity (jobs/doze-agent.nomad.hcl):
#   nomad acl policy apply -job doze-agent doze-agent docs/doze-agent-policy.hcl
# Discovery reads this node's allocations and every namespace's jobs (the event
# stream with namespace=*), and the agent's own /v1/agent/self (versions, node id).
namespace "*" {
  capabilities = ["read-job", "scale-job"]
}
node {
  policy = "read"
}
agent {
  policy = "read"
}
