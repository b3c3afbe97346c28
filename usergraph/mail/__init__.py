"""Email: messages rendered from templates (messages.py), written to the outbox in the
transaction that asks for them (outbox.py), and sent by a sender task (sender.py)."""
