"""CLI subcommands, one module per family; each has register(subparsers)."""
