"""cli/common.py against plain references: the exit code and one line of every error, Ctrl-C, the JSON
writer, the control-character escapes and the engine-name → option rewrite."""

from __future__ import annotations

import json
import unicodedata

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from songseek.cli.common import cli_message, handles_errors, option_names, print_json, safe_text
from songseek.engine.errors import DecodeError, LibraryError, SongseekError, UsageError

runner = CliRunner()


def _app(exc: BaseException) -> typer.Typer:
    app = typer.Typer()

    @app.command()
    @handles_errors
    def main(where_timeout: float = typer.Option(1.0, "--where-timeout"),
             k: int = typer.Option(3, "-k")) -> None:
        raise exc

    return app


@pytest.mark.parametrize("exc, code", [(SongseekError("x"), 1), (UsageError("x"), 2), (LibraryError("x"), 2),
                                       (DecodeError("x"), DecodeError.exit_code)])
def test_an_error_exits_with_its_own_code_in_one_line(exc: SongseekError, code: int) -> None:
    result = runner.invoke(_app(exc), [])
    assert result.exit_code == code and result.stdout == "" and result.stderr == "error: x\n"


def test_a_custom_exit_code_is_kept() -> None:
    class Odd(SongseekError):
        exit_code = 7

    result = runner.invoke(_app(Odd("timeout_s must be positive\x1b[2J")), [])
    assert result.exit_code == 7
    assert result.stderr == "error: --where-timeout must be positive\\x1b[2J\n"


def test_ctrl_c_is_exit_130_and_one_word() -> None:
    result = runner.invoke(_app(KeyboardInterrupt()), [])
    assert result.exit_code == 130 and result.stderr == "interrupted\n" and result.stdout == ""


def test_other_exceptions_are_not_swallowed() -> None:
    result = runner.invoke(_app(RuntimeError("bug")), [])
    assert isinstance(result.exception, RuntimeError)


def _reference_escape(text: str) -> str:
    out = []
    for ch in text:
        cp = ord(ch)
        if ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif cp < 0x20 or 0x7F <= cp <= 0x9F:
            out.append(f"\\x{cp:02x}")
        elif cp in (0x061C, 0x200E, 0x200F) or 0x202A <= cp <= 0x202E or 0x2066 <= cp <= 0x2069 \
                or 0xD800 <= cp <= 0xDFFF:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(ch)
    return "".join(out)


def test_safe_text_matches_a_per_character_reference() -> None:
    chars = [chr(c) for c in range(0, 0x250)] + [chr(c) for c in range(0x2000, 0x2070)] + \
        ["\u061c", "\ud800", "\udfff", "é", "🎵"]
    for ch in chars:
        assert safe_text(ch) == _reference_escape(ch), (hex(ord(ch)), unicodedata.name(ch, "?"))
    assert safe_text("a\x7fb\x9fc\u202ed") == "a\\x7fb\\x9fc\\u202ed"
    assert safe_text(12) == "12"


def test_print_json_is_one_utf8_line_with_numpy_values(capsys: pytest.CaptureFixture[str]) -> None:
    print_json({"name": "Björk – ☃", "n": np.int64(3), "x": np.float32(0.5), "v": np.arange(3)})
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1
    assert "Björk – ☃" in out and "\\u" not in out
    assert json.loads(out) == {"name": "Björk – ☃", "n": 3, "x": 0.5, "v": [0, 1, 2]}
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        print_json({"o": object()})


def test_option_names_prefer_the_long_form_and_map_engine_names() -> None:
    def command(e: str = typer.Option(None, "-e", "--encoder"), k: int = typer.Option(1, "-k"),
                where_timeout: float = typer.Option(1.0, "--where-timeout"),
                where_memory_mb: int = typer.Option(1, "--where-memory-mb"),
                tracks: int = typer.Option(1, "--tracks"), audio: bool = typer.Option(True, "--audio/--no-audio"),
                plain: int = 3) -> None:
        pass

    assert option_names(command) == {"e": "--encoder", "k": "-k", "where_timeout": "--where-timeout",
                                      "where_memory_mb": "--where-memory-mb", "tracks": "--tracks",
                                      "audio": "--audio", "timeout_s": "--where-timeout",
                                      "memory_mb": "--where-memory-mb", "n_tracks": "--tracks"}


def test_cli_message_swaps_only_whole_engine_names() -> None:
    names = {"k": "-k", "kernel_s": "--kernel-s", "encoder": "--encoder", "timeout_s": "--where-timeout"}
    assert cli_message("k=0 is too small", names) == "-k=0 is too small"
    assert cli_message("kernel_s=0.5", names) == "--kernel-s=0.5"
    assert cli_message("encoder=demo", names) == "encoder=demo"  # a word: only "encoder must" is the option
    assert cli_message("encoder must be one of demo", names) == "--encoder must be one of demo"
    assert cli_message("my_kernel_s must be > 0", names) == "my_kernel_s must be > 0"  # not a whole name
    assert cli_message("pre-k=1", names) == "pre-k=1"
    assert cli_message("kernel_s is fine", names) == "kernel_s is fine"  # no must, :, =
    assert cli_message("Thing (engine/x/y.py): -k must be 1", names) == "-k must be 1"
    assert cli_message("Thing (engine/x/y.py): k must be 1", names) == "-k must be 1"
    assert cli_message("Thing (engine/x/y.py): bad input", names) == "Thing (engine/x/y.py): bad input"
    assert cli_message("k must be 1", {}) == "k must be 1"
