"""Every benchmark of unison-stream, one module each, run as ``unison-stream bench NAME``.

- ``model``: the model core's speed (per-call, per-chunk, cached vs recompute, GFLOP/s bound);
- ``stream``: the streaming engine end to end in one process (rtf, first media, interrupt);
- ``codec``: quality and decode speed of the bundled codecs on held-out clips;
- ``serve``: what a client of a served server gets (aiortc clients; ``--chromium``: ``browser``);
- ``soak``, ``load``, ``faults``, ``hostile``: the served server over time, full, under
  repeated faults and under hostile input (docs/reliability.md);
- ``cluster``: Ray Serve replicas behind the front door (docs/cluster.md);
- ``int8``: int8 dynamic quantization of the model's linear layers against fp32.

``harness`` holds what the served ones share (a ``serve`` subprocess, an aiortc client that
timestamps every frame, the say/interrupt trial, ``/proc`` figures, the figure printer);
``cli`` lists the modules for the command line. Nothing here is imported by the server, the
engine or the model.
"""
