"""Fixtures for image tests: a store on a temp state dir, the busybox base in it."""

from __future__ import annotations

from pathlib import Path

import pytest

from images.base import bootstrap
from images.store import Image, ImageStore


@pytest.fixture
def store(state_dir: Path) -> ImageStore:
    s = ImageStore(state_dir / "images")
    s.open()
    return s


@pytest.fixture
def busybox(store: ImageStore) -> Image:
    return bootstrap(store, "busybox")
