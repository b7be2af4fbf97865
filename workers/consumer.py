"""Celery's message consumer, made to notice a stop at once.

A solo-pool worker consumes in Celery's blocking loop, which waits up to 2 s for a message
before it looks whether it should stop. So a burst worker that found its queues empty, or a
worker told to shut down while idle, lingered 2 s for nothing: with tens of burst workers a
test run, and every `gand worker --burst` a user runs, that adds up. Here each wait is cut to
TURN_SECONDS; the transport still waits for messages the same way (the filesystem broker
polls every 0.1 s; Redis blocks on BRPOP, which kombu keeps pending across turns).
"""
from __future__ import annotations

from celery.worker import loops
from celery.worker.consumer import Consumer as CeleryConsumer

TURN_SECONDS = 0.2


def _quick_synloop(obj, connection, *args, **kwargs):
    drain = connection.drain_events

    def drain_a_turn(timeout=None, **kw):
        return drain(timeout=TURN_SECONDS if timeout is None else min(timeout, TURN_SECONDS), **kw)

    connection.drain_events = drain_a_turn  # this connection only; a reconnect starts afresh
    try:
        return loops.synloop(obj, connection, *args, **kwargs)
    finally:
        connection.drain_events = drain


class Consumer(CeleryConsumer):
    # Celery picks asynloop or synloop only when the class has no `loop` of its own; gand's
    # worker uses the solo pool, which has no event hub, so Celery would pick synloop.
    def __init__(self, *args, hub=None, **kwargs):
        if hub is None:
            self.loop = _quick_synloop
        super().__init__(*args, hub=hub, **kwargs)
