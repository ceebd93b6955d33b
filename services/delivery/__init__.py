"""Delivery of agents' work into the tools they already use: signed webhooks, Slack, email."""
