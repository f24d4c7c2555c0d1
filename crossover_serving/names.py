"""What the serving side and the kit agree on, in a module that imports nothing: the CDK side and the cost
model read it without loading the runtime's dependencies (powertools costs ~90 ms at every synth)."""

NAMESPACE = "crossover"  # the CloudWatch namespace of every model's metrics
SERVICE = "crossover"  # their `service` dimension: powertools' POWERTOOLS_SERVICE_NAME in Lambda
LAMBDA_MIB_PER_VCPU = 1769  # Lambda allocates one vCPU per 1,769 MB of memory, up to 6
# On Lambda Managed Instances an execution environment runs AWS_LAMBDA_MAX_CONCURRENCY Python processes (Lambda sets
# it), which share its memory and its vCPUs: this variable (set by crossover's construct) says how many vCPUs.
ENVIRONMENT_VCPUS = "CROSSOVER_ENVIRONMENT_VCPUS"
