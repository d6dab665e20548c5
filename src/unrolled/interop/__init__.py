"""Adapters to other libraries, each an optional extra imported on its own.

``unrolled.interop.deepinv`` (``pip install "unrolled[deepinv]"``): DeepInverse's linear
physics as :class:`unrolled.linalg.LinearOperator` and a DeepInverse data fidelity whose
prox is :func:`unrolled.prox_l2`. ``import unrolled`` never imports these modules.
"""
