"""The durable operations, one module per kind, mixed into :class:`~lambdarun_durable.context.DurableContext`.

``base`` (ids, replay, checkpoint writes), ``step``, ``wait`` (wait, wait_for_condition),
``callback``, ``invoke``, ``child`` (child contexts), ``batch`` (map, parallel).
"""
