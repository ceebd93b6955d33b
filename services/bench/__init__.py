"""``relaydesk bench <name>``: benchmarks, not tests. Each prints its figures beside a ceiling
measured in the same run (a bare nats-py loop or a minimal handler doing the same I/O) and writes
JSON with ``--json FILE``."""
