"""The shape of crossover's shared network, for the stack that builds it and the cost model that prices it
(no CDK imports)."""

AZS = 2  # subnets in two availability zones; interface endpoints are billed per AZ
NAT_GATEWAYS = 1  # one for the VPC: instances reach the package index at boot through it (crossover/ami/bootstrap.sh)
