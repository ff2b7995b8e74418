import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# The shared, read-only datasets live next to the repo, never inside it.
SHARED = REPO_ROOT.parent / "shared" / "datasets"

# Make the package importable when pytest is run as a script (`.venv/bin/pytest`), which, unlike
# `python -m pytest`, does not put the working directory on sys.path.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED}")
    return SHARED
