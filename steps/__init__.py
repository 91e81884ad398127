"""Pipeline steps: one package per step, each a typed core function plus a thin CLI."""
