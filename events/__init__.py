"""The event contract of Relaydesk: facts, subjects, codec and the JetStream store."""
