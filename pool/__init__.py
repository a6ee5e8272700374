"""The pool manager: warm pools of pre-created containers behind a Redis queue.

``pool.contract`` is the part the gateway may use: key names, message shapes and
the client. Everything else here runs on a node and owns its runtime and images.
"""
