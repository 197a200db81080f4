"""The JSON API for integrations, under /api/v1 on the portal's aiohttp application.

    tokens      agents' bearer tokens: created by the operator, stored hashed
    problems    RFC 9457 problem+json errors, the only way an error leaves
    spec        the OpenAPI 3.1 document served at /api/v1/openapi.json
    views       the endpoints: reads from the database, writes through intake
    idempotency Idempotency-Key: a retried POST answers what the first did

Every write becomes a message spooled through :mod:`gateway.internal` and
processed like mail (an agent's action as a reply with commands, a new
ticket as the customer's mail), so it makes the same events, notifications
and outbox rows as the mail path.
"""
