"""The guest portal: customers read and answer their tickets after proving,
with a code sent by mail, that they own the address on the ticket.

access   links, sessions, codes and their limits (database rules)
app      the aiohttp routes, security headers and error pages
pages    jinja2 rendering of templates/portal/ in en, vi and fa
"""
