"""Evaluation of the streaming model on held-out clips: this project's analogues of the Unison
paper's metrics, from lip sync to visual quality (``docs/eval.md``).

One file per metric family — :mod:`.lipsync`, :mod:`.sfx`, :mod:`.identity`,
:mod:`.intelligibility`, :mod:`.visual` (sharpness, Fréchet distance, feature visibility,
identity verification) — plus :mod:`.features` (the feature net trained on the world's ground
truth, trained by :mod:`.features_train`), :mod:`.quality` (the visual figures of a run),
:mod:`.grid` (the picture), :mod:`.generate` (driving the engine, the codec round trip),
:mod:`.evaluate` (the report) and :mod:`.cli` (``unison-stream eval``). Definitions and bars:
``docs/eval.md``.
"""
