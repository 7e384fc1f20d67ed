"""Triggers: cron, event and manual rules that run an action, and the service that fires them.

Kept import-light (the store imports ``pipeline.triggers.spec``); import the service from
``pipeline.triggers.service``.
"""
