"""Helpdesk sinks: two-way sync of conversations with Zendesk, Freshdesk and others (``sdk``)."""
