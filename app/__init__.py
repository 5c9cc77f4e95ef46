"""HandTwin desktop app: a PySide6 GUI over the headless engine in ``core``."""
