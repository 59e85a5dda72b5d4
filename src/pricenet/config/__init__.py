"""Config schemas and the one config check; monitors, device and seed, command options."""
