"""Web chat connector: widget, sessions, WebSocket (see ``connectors/chat/README.md``)."""
