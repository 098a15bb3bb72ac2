"""The keys file: edits that keep every other line, 0600 on creation, dedup, no secret in any output; and a second
client on the same store and keys file that sees a new key without a restart. Real files in tmp_path, the
simulator over HTTP."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from config import keys_file
from config.keys_file import KeysFileError, add_keys, parse_block, remove_keys
from config.settings import load_settings
from llms import smart_client
from llms.smart_client import SmartClient
from simulator import Simulator
from tests.conftest import ALL_SECRETS, SECRETS

OR1, OR2 = SECRETS["openrouter"][:2]
GQ1, GQ2, GQ3 = SECRETS["groq"][:3]
GM1 = SECRETS["gemini"][0]

ORIGINAL = (
    "# my settings\r\n"
    "LLM_PROVIDER_ORDER=groq,openrouter\r\n"
    "\r\n"
    f"GROQ_API_KEY_1={GQ1}\r\n"
    "GROQ_API_KEY_1_GROUP=team-a\r\n"
    "export GROQ_CHAT_MODEL='openai/gpt-oss-20b'  # keep me\r\n"
    "LLM_MAX_WAIT=0"  # no newline at the end
)


def test_adding_keeps_every_other_line_and_picks_the_next_free_number(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(ORIGINAL.encode())
    path.chmod(0o640)
    given = add_keys(str(path), [("groq", GQ2), ("openrouter", OR1), ("groq", GQ1)], taken={"groq": [1, 4]})
    assert given == ["groq:5", "openrouter:1"], "past the environment's groq:4; a key already in the file is skipped"
    text = path.read_bytes().decode()
    assert text.startswith(ORIGINAL + "\r\n"), "the old lines, byte for byte, with their CRLF endings"
    assert text[len(ORIGINAL) + 2 :] == f"GROQ_API_KEY_5={GQ2}\r\nOPENROUTER_API_KEY_1={OR1}\r\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640, "an existing file keeps its mode"
    assert [p.name for p in tmp_path.iterdir()] == [".env"], "no temporary file left behind"
    settings = load_settings({}, dotenv_path=str(path))
    assert [k.key_id for k in settings.providers["groq"].keys] == ["groq:1", "groq:5"]


def test_a_new_keys_file_is_created_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys.env"
    assert add_keys(str(path), [("gemini", GM1)]) == ["gemini:1"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text() == f"GEMINI_API_KEY_1={GM1}\n"


def test_removing_drops_the_key_and_its_group_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes((ORIGINAL + f"\r\nOPENROUTER_API_KEY_2={OR2}\r\n").encode())
    assert remove_keys(str(path), [GQ1, GM1]) == ["GROQ_API_KEY_1"], "a key not in the file is not there to remove"
    assert path.read_bytes().decode() == (
        "# my settings\r\nLLM_PROVIDER_ORDER=groq,openrouter\r\n\r\n"
        "export GROQ_CHAT_MODEL='openai/gpt-oss-20b'  # keep me\r\n"
        f"LLM_MAX_WAIT=0\r\nOPENROUTER_API_KEY_2={OR2}\r\n"
    )
    assert remove_keys(str(path), [GQ1]) == []


def test_a_pasted_block_is_recognised_deduplicated_and_never_repeated() -> None:
    block = (
        f"  {GQ2}, {OR1}\n"
        f'export GEMINI_API_KEY_3="{GM1}"\n'
        "# a comment\n"
        "MISTRAL_API_KEY=mistral-0123456789abcdef\n"
        "GROQ_CHAT_MODEL=openai/gpt-oss-20b\n"
        f"GROQ_API_KEY_9={GQ1}\n"
        f"{GQ2}\n"
        "unknown-0123456789abcdef\n"
        "short\n"
    )
    found = parse_block(block, existing={GQ1: "groq:1"})
    assert [(c.provider, c.where, c.problem) for c in found] == [
        ("groq", "line 1", None),
        ("openrouter", "line 1", None),
        ("gemini", "line 2 (GEMINI_API_KEY_3)", None),
        ("mistral", "line 4 (MISTRAL_API_KEY)", None),
        ("groq", "line 6 (GROQ_API_KEY_9)", "already configured as groq:1"),
        ("groq", "line 7", "repeated in what you pasted"),
        (None, "line 8", "provider not recognised: paste it as NAME_API_KEY=key (e.g. MISTRAL_API_KEY=…)"),
        (None, "line 9", "too short to be an API key"),
    ]
    assert found[2].secret == GM1 and found[2].hint == f"{GM1[:4]}…{GM1[-4:]}"
    assert not any(secret in repr(found) for secret in ALL_SECRETS)


def test_no_secret_in_errors_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Real failures (a file that is not UTF-8 beside a key, a directory that is a file) name the file only."""
    caplog.set_level(logging.DEBUG)
    broken = tmp_path / ".env"
    broken.write_bytes(f"GROQ_API_KEY_1={GQ1}\n".encode() + b"\xff\xfe" + GQ2.encode() + b"\n")
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text(GQ3)
    errors = []
    for path, action in (
        (broken, lambda p: add_keys(p, [("groq", GQ3)])),
        (broken, lambda p: remove_keys(p, [GQ1])),
        (not_a_directory / ".env", lambda p: add_keys(p, [("groq", GQ3)])),
    ):
        with pytest.raises(KeysFileError) as raised:
            action(str(path))
        errors.append(str(raised.value))
    assert errors[0].startswith(f"cannot read the keys file {broken}")
    for text in (*errors, caplog.text):
        assert not any(secret in text for secret in ALL_SECRETS), text


def test_settings_read_the_keys_file_between_dotenv_and_the_environment(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"LLM_KEYS_FILE={tmp_path / 'keys.env'}\nGROQ_API_KEY_1={GQ1}\n")
    (tmp_path / "keys.env").write_text(f"GROQ_API_KEY_2={GQ2}\nOPENROUTER_API_KEY_1={OR1}\n")
    settings = load_settings({"OPENROUTER_API_KEY_1": OR2}, dotenv_path=str(dotenv))
    assert settings.keys_file == str(tmp_path / "keys.env")
    assert [k.secret for k in settings.groq_api_keys] == [GQ1, GQ2]
    assert [k.secret for k in settings.openrouter_api_keys] == [OR2], "the environment wins"
    assert load_settings({}, dotenv_path=str(dotenv)).reread() == load_settings({}, dotenv_path=str(dotenv))
    assert load_settings({}, dotenv_path=None).keys_file is None
    assert load_settings({}, dotenv_path=str(tmp_path / "keys.env")).keys_file == str(tmp_path / "keys.env")


def test_a_second_client_on_the_same_store_and_file_sees_a_new_key_without_a_restart(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smart_client, "KEYS_FILE_POLL", 0.0)  # look at every call instead of every 2 s
    sim.add_key("groq", GQ1, name="groq:1")
    sim.add_key("groq", GQ2, name="groq:2")
    path = tmp_path / "keys.env"
    path.write_text(f"GROQ_API_KEY_1={GQ1}\n")
    env = {
        **sim.env(),
        "LLM_PROVIDER_ORDER": "groq",
        "LLM_KEYS_FILE": str(path),
        "LLM_STATE_URL": f"sqlite://{tmp_path / 'state.db'}",
    }
    writer = SmartClient(load_settings(env, dotenv_path=None))
    reader = SmartClient(load_settings(env, dotenv_path=None))
    try:
        assert [k.key_id for s in reader.admin.provider_statuses() for k in s.keys] == ["groq:1"]
        add_keys(str(path), [("groq", GQ2)], taken={"groq": [1]})
        writer.reload_keys()
        assert [k.key_id for s in reader.admin.provider_statuses() for k in s.keys] == ["groq:1", "groq:2"]
        writer.admin.disable_key("groq:1")  # the store is shared: the reader must now use the new key
        assert reader.complete([{"role": "user", "content": "hi"}]).key_id == "groq:2"
        remove_keys(str(path), [GQ1])
        assert [k.key_id for s in reader.admin.provider_statuses() for k in s.keys] == ["groq:2"]
        path.write_text("GROQ_API_KEY_1=has whitespace\n")  # a broken edit keeps the keys in use
        assert [k.key_id for s in reader.admin.provider_statuses() for k in s.keys] == ["groq:2"]
    finally:
        writer.close()
        reader.close()


def test_the_watch_costs_one_stat_per_poll(tmp_path: Path) -> None:
    path = tmp_path / "keys.env"
    assert keys_file.file_stamp(str(path)) is None
    path.write_text("X=1\n")
    first = keys_file.file_stamp(str(path))
    add_keys(str(path), [("groq", GQ1)])
    assert keys_file.file_stamp(str(path)) != first
