"""Outgoing webhooks: the outbox, payloads, signatures and the URLs Dockyard may call."""
