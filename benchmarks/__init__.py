"""Benchmarks of ``unrolled``: time, memory, CG work and gradient accuracy of training.

Entry point: ``python -m benchmarks.run`` (``--help`` for the flags). It writes a JSON
file of every raw number and PNG plots to ``--out``, and prints a markdown table.
Nothing here asserts on time: the figures are measurements, quoted with the command
and the machine that made them (see ``docs/performance.md``).

Modules, one job each:

* :mod:`.config`: the benchmark settings (seed configuration, ``--quick``, CUDA) and
  the machine description.
* :mod:`.problem`: data, physics and the network of each mode, from one seed.
* :mod:`.reference`: the optional deepinv 0.5.0 data step, for the comparison.
* :mod:`.measure`: interleaved training steps, memory meters, gradient error.
* :mod:`.rss`: peak resident memory of a training step, each mode in its own process.
* :mod:`.cg_floor`: CG iterations to the floating-point floor, per padding.
* :mod:`.scaling`: saved bytes vs CG ``max_iter``, time and memory vs size and batch.
* :mod:`.report`, :mod:`.plots`: the markdown table and the PNG figures.
"""
