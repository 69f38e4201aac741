"""Secrets at rest: password hashing and the encryption of deploy env values."""
