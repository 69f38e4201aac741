"""The API's marshmallow schemas, one module per resource: they validate requests, shape
responses and make the OpenAPI document (api/openapi.py).

A job's and a deployment's bodies are shared/schemas/responses.py's (webhook deliveries,
rendered by a worker without Flask, show them too); the modules here import them from there.
"""
