"""The tooling above the engine: commands, benchmarks, evaluations and build scripts.

Nothing in the stage packages or in :mod:`core.engine` imports this package
(tests/test_layering.py); it may import anything in ``core``.

- ``cli_*``: the commands ``main.py`` runs (``track``, ``calibrate``, ``export``, ``calib-camera``);
- ``bench*``: ``python main.py bench`` (:mod:`core.tools.bench` runs the others);
- ``evaluate_*``: accuracy on synthetic and real data (``python -m core.tools.evaluate_...``);
- ``build_*``, ``train_*``: development-time scripts that derive files under ``resources/``.
"""
