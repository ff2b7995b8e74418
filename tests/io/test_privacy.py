"""Patient keys use a secret salt: never the bare public default when a salt file can be kept."""
import hashlib

from neuralscan_cli.io.privacy import DEFAULT_SALT, SALT_ENV_VAR, patient_key


def test_secret_salt_is_made_once_and_kept(tmp_path, monkeypatch):
    monkeypatch.delenv(SALT_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    key = patient_key("PAT-0001")
    salt_file = tmp_path / "neuralscan" / "salt"
    assert salt_file.is_file() and oct(salt_file.stat().st_mode & 0o777) == "0o600"
    public = hashlib.sha256(f"{DEFAULT_SALT}\0PAT-0001".encode()).hexdigest()[:16]
    assert key != public and "PAT-0001" not in key
    assert patient_key("PAT-0001") == key  # stable across calls: the same patient groups together


def test_env_salt_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.setenv(SALT_ENV_VAR, "site-secret")
    expected = hashlib.sha256("site-secret\0PAT-0001".encode()).hexdigest()[:16]
    assert patient_key("PAT-0001") == expected
    assert not (tmp_path / "neuralscan" / "salt").exists()
