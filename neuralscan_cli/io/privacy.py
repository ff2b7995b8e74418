"""Turning a patient identity into a key that groups a patient's slices without revealing who it is.

The key is a salted SHA-256, so the same patient gets the same key across files and runs (needed for
patient-grouped splits), while the raw ID cannot be looked up from it without the salt. Set
`NEURALSCAN_SALT` to a private value for real clinical data: with the public default salt anyone could
hash guessed IDs and compare.
"""
from __future__ import annotations

import hashlib
import os

SALT_ENV_VAR = "NEURALSCAN_SALT"
DEFAULT_SALT = "neuralscan-default-salt-v1"
KEY_HEX_CHARS = 16  # 64 bits: collisions stay negligible for any realistic number of patients


def patient_key(raw: str) -> str:
    """Salted hash of a patient identity (PatientID, figshare PID, ...), as 16 hex characters."""
    identity = raw.strip()
    if not identity:
        raise ValueError("patient_key needs a non-empty identity")
    salt = os.environ.get(SALT_ENV_VAR) or DEFAULT_SALT  # read per call, so a changed env takes effect
    digest = hashlib.sha256(f"{salt}\0{identity}".encode("utf-8")).hexdigest()
    return digest[:KEY_HEX_CHARS]
