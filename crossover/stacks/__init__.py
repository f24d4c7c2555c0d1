"""Stacks: thin compositions of constructs, translated from a validated config."""
