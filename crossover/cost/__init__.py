"""Cost: a sourced price catalog, per-backend performance profiles, monthly costs and crossovers."""
