"""Turning a patient identity into a key that groups a patient's slices without revealing who it is.

The key is a salted SHA-256, so the same patient gets the same key across files and runs (needed for
patient-grouped splits), while the raw ID cannot be looked up from it without the salt. The salt is secret:
`NEURALSCAN_SALT` when set (share it between machines that must agree on keys), else a random salt made once
per user and kept in `~/.config/neuralscan/salt` (mode 600). Only where no such file can be written does a
fixed public salt remain, and then anyone could hash guessed IDs and compare: a warning says so.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import warnings
from pathlib import Path

SALT_ENV_VAR = "NEURALSCAN_SALT"
DEFAULT_SALT = "neuralscan-default-salt-v1"
KEY_HEX_CHARS = 16  # 64 bits: collisions stay negligible for any realistic number of patients


def _salt_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "neuralscan" / "salt"


def _secret_salt() -> str:
    path = _salt_file()
    try:
        return path.read_text().strip()
    except OSError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        return path.read_text().strip()
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    except OSError:
        warnings.warn(f"cannot keep a secret salt in {path}; patient keys use the public default salt "
                      f"(set {SALT_ENV_VAR} for real patient data)", stacklevel=3)
        return DEFAULT_SALT


def patient_key(raw: str) -> str:
    """Salted hash of a patient identity (PatientID, figshare PID, ...), as 16 hex characters."""
    identity = raw.strip()
    if not identity:
        raise ValueError("patient_key needs a non-empty identity")
    salt = os.environ.get(SALT_ENV_VAR) or _secret_salt()  # read per call, so a changed env takes effect
    digest = hashlib.sha256(f"{salt}\0{identity}".encode("utf-8")).hexdigest()
    return digest[:KEY_HEX_CHARS]
