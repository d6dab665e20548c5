"""Applications built on the library: ``unrolled demo`` (:mod:`unrolled.apps.demo`),
``unrolled train`` (:mod:`unrolled.apps.train`, configured by
:mod:`unrolled.apps.train_config`) and ``unrolled eval`` (:mod:`unrolled.apps.evaluate`).

They sit on top of the library (``linalg`` <- ``physics`` <- ``fidelity`` / ``models``
<- ``unfolded`` <- ``train``) and below ``unrolled.cli``; nothing in the library
imports them.
"""
