"""The webhook alerter: settings, outbox, signing, projection, sender.

``hooks`` wires them to the hooks. Alerts are written to an outbox table
inside the spend transaction and delivered later by sender threads, so a slow
or dead webhook never touches an LLM call.
"""
