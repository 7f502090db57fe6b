"""Settings: documented in README, read from the environment and `.env`, overridden by CLI flags."""

from __future__ import annotations

import os
import re
import time
import types
from pathlib import Path

import pytest

from chat_server.auth import decode_embed_token
from chat_server.cli import build_parser, listen_address
from chat_server.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in [v for v in os.environ if v.startswith("TUTORHUB_")]:
        monkeypatch.delenv(var)
    return monkeypatch


def _config_rows() -> dict[str, str]:
    """README's configuration table: `TUTORHUB_<NAME>` -> the whole row."""
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `(TUTORHUB_[A-Z0-9_]+)` \|", line)
        if m:
            rows[m.group(1)] = line
    return rows


def test_every_setting_is_in_the_readme_table() -> None:
    rows = _config_rows()
    missing = [f"TUTORHUB_{name.upper()}" for name in Settings.model_fields
               if f"TUTORHUB_{name.upper()}" not in rows]
    assert missing == [], f"add rows to README.md's configuration table for {missing}"
    stale = [var for var in rows if var.removeprefix("TUTORHUB_").lower() not in Settings.model_fields]
    assert stale == [], f"README documents settings that do not exist: {stale}"


def test_readme_defaults_match_simple_settings() -> None:
    rows = _config_rows()
    for name, field in Settings.model_fields.items():
        if isinstance(field.default, int | str) and not isinstance(field.default, bool):
            cells = rows[f"TUTORHUB_{name.upper()}"].split(" | ")
            assert cells[1] == f"`{field.default}`", (name, cells[1])


def test_environment_and_dotenv(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment\n"
        "TUTORHUB_PORT=9123\n"
        "TUTORHUB_HOST=0.0.0.0\n"
        "TUTORHUB_DATA_DIR=/srv/данные\n"
        "TUTORHUB_YOUTUBE_LANGUAGES='[\"ru\",\"en\"]'\n"
        "TUTORHUB_AUTO_MIGRATE=false\n"
        "TUTORHUB_DATABASE_URL=postgresql://u:p@db/tutorhub\n"
        "TUTORHUB_NOT_A_SETTING=ignored\n",
        encoding="utf-8",
    )
    s = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert (s.port, s.host, s.data_dir) == (9123, "0.0.0.0", Path("/srv/данные"))
    assert s.youtube_languages == ["ru", "en"]
    assert s.auto_migrate is False and s.should_migrate is False
    assert s.embedded is False and s.database_url == "postgresql://u:p@db/tutorhub"

    # The environment wins over .env.
    clean_env.setenv("TUTORHUB_PORT", "9200")
    assert Settings(_env_file=env_file).port == 9200  # type: ignore[call-arg]

    # Without .env and environment: the documented defaults.
    clean_env.delenv("TUTORHUB_PORT")
    d = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (d.port, d.host, d.database_url) == (8000, "127.0.0.1", None)
    assert d.embedded is True and d.should_migrate is True


def test_default_env_file_is_dotenv_in_the_working_directory(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text("TUTORHUB_LOG_LEVEL=debug\n")
    clean_env.chdir(tmp_path)
    assert Settings().log_level == "debug"


def test_bad_values_are_refused(clean_env: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    clean_env.setenv("TUTORHUB_PORT", "eighty")
    with pytest.raises(ValidationError, match="port"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_serve_host_and_port_flags_override_settings(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TUTORHUB_HOST", "10.0.0.1")
    clean_env.setenv("TUTORHUB_PORT", "9000")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    parser = build_parser()
    assert listen_address(parser.parse_args(["serve"]), settings) == ("10.0.0.1", 9000)
    args = parser.parse_args(["serve", "--host", "0.0.0.0", "--port", "9100"])
    assert listen_address(args, settings) == ("0.0.0.0", 9100)
    assert listen_address(parser.parse_args(["serve", "--port", "0"]), settings) == ("10.0.0.1", 0)
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--port", "not-a-port"])


def test_readme_embed_token_example_is_accepted() -> None:
    section = README.split("### Embed tokens", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.strip().splitlines()) <= 5
    settings = Settings(_env_file=None, embed_secret="shared-secret-0123456789")  # type: ignore[call-arg]
    scope = {"user": types.SimpleNamespace(id=42, name="Анна"), "EMBED_SECRET": settings.embed_secret}
    exec(code, scope)
    external_id, name, exp = decode_embed_token(settings, str(scope["token"]))
    assert (external_id, name) == ("embed:42", "Анна")
    assert time.time() < exp <= time.time() + 31 * 60


def test_readme_names_the_two_commands_and_they_exist() -> None:
    for script in ("scripts/serve.sh", "scripts/test.sh"):
        assert f"./{script}" in README
        assert os.access(ROOT / script, os.X_OK), script
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    assert "docs/protocol.md" in README and "test-artifacts/" in README
