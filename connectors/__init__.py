"""Channel connectors, one sub-package per channel, plus the SDK integrators build on."""
