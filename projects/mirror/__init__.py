"""The mirror engine: epilot documents into rows (`rows`), pages stored in bulk with relations as rows (`pages`, `bulk`),
the way in for a few entities and their executions (`intake`), sync leases and pacing, the schema mapping (`schemas`)
and the change event (`changes`) the back-office domain in `projects/services/` listens to.

It imports nothing of the back-office domain: dependencies point from the services to here.
"""
