"""Reusable CDK constructs: the front doors, the backends behind one interface (crossover.constructs.backend),
monitoring and the model artifact. They take CDK types; ``from_config`` builds a backend from the shared
config, which they never read from a file."""
