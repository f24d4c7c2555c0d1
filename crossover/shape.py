"""The shape of crossover's shared network, for the stack that builds it and the cost model that prices it, and
the names the stacks write that the deploy tools read (no CDK imports: the tools never load the CDK for them)."""

# The context value that holds a canary's new backend at weight 0 (the first of a canary's two updates).
CANARY_WEIGHT_CONTEXT = "crossover:canary-weight"
# The stack output that lists the alarms CloudFormation rolls a deploy back on.
ROLLBACK_ALARMS_OUTPUT = "RollbackAlarms"
# The header a backend's staging rule asks for (crossover.constructs.front_door): a rule that asks for it stages a
# target group for health checks and routes no client's request (the rehearsal tells the two kinds apart by it).
BACKEND_HEADER = "x-crossover-backend"

AZS = 2  # subnets in two availability zones; interface endpoints are billed per AZ
# One NAT gateway by default: the cheapest way out for a small deployment (about $37 a month with its address
# against about $58 for the endpoints below). Nothing at boot needs it any more (instances install from the
# deploy's bundle).
NAT_GATEWAYS = 1
# What instances call when the network has no NAT (`network: {nat_gateways: 0}`), each an interface endpoint
# in every AZ: CloudWatch metrics, the pipeline's queue, the load balancer's target health (an instance waits
# to be healthy before it signals), and CloudFormation (that signal). S3 (model, bundles, results, the Amazon
# Linux package repositories) goes through the free gateway endpoint. Nothing on an instance calls CloudWatch
# Logs (the server logs to the journal), so there is no logs endpoint.
PRIVATE_ENDPOINTS = ("monitoring", "sqs", "elasticloadbalancing", "cloudformation")
