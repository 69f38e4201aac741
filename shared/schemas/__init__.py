"""Marshmallow schemas both sides use: how a job and a deployment look from outside."""
