"""MySetlist shared package: models, domain logic, data access, auth, settings, observability.

Shipped to every function as the Common layer (``layers/common``). Domain modules never read
``os.environ``: they receive a validated :class:`mysetlist.settings.Settings`.
"""
