"""README *Backup and restore* names every secret ``relaydesk up`` keeps in its data dir.

An operator audit restored only the JetStream store into a fresh data dir, as the section said
("Everything Relaydesk knows is in NATS"): every agent token was refused (the API signing key
was new), and the chat visitor addresses, derived from the chat session secret, changed.
"""

from __future__ import annotations

from pathlib import Path

from services.bootstrap import api_signing_key, api_token
from services.config import load
from services.up import with_built_in_connectors

README = Path(__file__).resolve().parents[2] / "README.md"


def backup_section() -> str:
    text = README.read_text()
    start = text.index("### Backup and restore")
    return text[start : text.index("\n### ", start + 1)]


def test_every_secret_up_keeps_in_the_data_dir_is_named_in_backup_and_restore(tmp_path: Path) -> None:
    config = load(None, env={})
    api_token(config, tmp_path)
    api_signing_key(config, tmp_path, generate=True)
    with_built_in_connectors(config, tmp_path)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept, "up keeps no secret in its data dir?"
    section = backup_section()
    missing = [name for name in kept if f"<data dir>/{name}" not in section]
    assert not missing, f"README Backup and restore does not say to keep {missing}"


def test_backup_and_restore_says_to_restart_every_service_after_a_restore() -> None:
    section = backup_section()
    assert "Stop every Relaydesk service before restoring NATS" in section
