"""``pki-server <command>``: one module per command (docs/cli.md)."""
