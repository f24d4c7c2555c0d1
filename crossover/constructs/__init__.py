"""Reusable CDK constructs. They take narrow keyword arguments and never read YAML."""
