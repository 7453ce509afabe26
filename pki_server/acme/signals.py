"""Signals of the ACME server, for whoever watches it (the dashboard's live feed).

They are sent inside the transaction that makes the change; a receiver that talks to the outside
world should wait for ``transaction.on_commit``. Every ``sender`` is the model class concerned.

``order_created(sender=AcmeOrder, order)``
    after newOrder saved ``order`` (its ``account`` is loaded).
``challenge_finished(sender=AcmeChallenge, challenge_id, valid, error)``
    after a validation's outcome was stored; ``error`` is the problem document of a failure (``None``
    when valid).
``order_finished(sender=AcmeOrder, order)``
    after issuance made ``order`` valid (``order.certificate`` set) or invalid (``order.error`` set).
"""

from django.dispatch import Signal

order_created = Signal()
challenge_finished = Signal()
order_finished = Signal()
