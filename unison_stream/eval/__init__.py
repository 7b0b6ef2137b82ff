"""Evaluation of the streaming model on held-out clips (issue 5, DESIGN.md §7).

One file per metric family — :mod:`.lipsync`, :mod:`.sfx`, :mod:`.identity`,
:mod:`.intelligibility` — plus :mod:`.generate` (driving the engine), :mod:`.evaluate` (the
report) and :mod:`.cli` (``unison-stream eval``). Definitions and bars: ``docs/eval.md``.
"""
