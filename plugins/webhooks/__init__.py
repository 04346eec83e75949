"""The webhook alerter's parts: settings, outbox, signing, projection, sender.

``plugins/webhook_alerter.py`` wires them to the hooks. Alerts are written to
an outbox table inside the spend transaction and delivered later by sender
threads, so a slow or dead webhook never touches an LLM call.
"""
