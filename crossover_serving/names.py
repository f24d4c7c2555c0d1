"""Names the serving side and the stacks agree on, in a module that imports nothing: the CDK side reads
them without loading the runtime's dependencies (powertools costs ~90 ms at every synth)."""

NAMESPACE = "crossover"  # the CloudWatch namespace of every model's metrics
SERVICE = "crossover"  # their `service` dimension: powertools' POWERTOOLS_SERVICE_NAME in Lambda
