"""A worked example for integrators: a Telegram connector built on the SDK (see connectors/README.md)."""
