"""The processes of Relaydesk and their wiring."""
