"""Twilio Voice: calls become conversations, accepted calls are bridged to the agent."""
