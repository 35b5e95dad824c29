"""Live and recoverable subscriptions, their subscriber connections, recovery, request/reply."""
