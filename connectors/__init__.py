"""The SMS gateway connector (sms.outbox to an HTTP SMS gateway)."""
