"""The built-in scenarios, one TOML file each (format: docs/simulator.md)."""
