"""HandTwin core engine: capture, detection, hand model, fitting, rendering, export.

Nothing in ``core`` imports Qt or pyvista (``tests/test_layering.py`` enforces it), so every
stage runs and is tested headless.
"""
