"""The WebSocket hub: sockets, per-user sessions, the bus that fans events out."""
