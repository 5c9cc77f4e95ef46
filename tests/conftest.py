"""Shared fixtures: seeded RNGs, the open hand, and a home for Qt settings."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True)
def _no_user_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests use the bundled open hand unless they set a model themselves."""
    monkeypatch.delenv("HANDTWIN_MODEL", raising=False)


@pytest.fixture(scope="session")
def open_hand():
    from core.model import load_open_hand

    return load_open_hand("right")


@pytest.fixture(scope="session")
def hand_layer(open_hand):
    from core.model import HandModel

    return HandModel(open_hand)


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
