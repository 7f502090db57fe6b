"""The taskiq tasks. Each is a thin entry point that calls into chat_server; the broker, task
names and enqueueing live in chat_server.jobs (which never imports this package)."""
