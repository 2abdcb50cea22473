"""``edge-agent check-config`` and ``run`` as an installer meets them: the command line,
exit codes and the lines printed (the golden cases in ``tests/config_cases`` hold the rest)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.cli import EXIT_CONFIG, main

CASES = Path(__file__).resolve().parents[1] / "config_cases"


def test_check_config_takes_dash_c(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(CASES / "minimal" / "config.yaml")
    assert main(["check-config", "-c", path]) == 0
    assert f"{path}: OK" in capsys.readouterr().out
    assert main(["check-config", path]) == 0


def test_check_config_needs_exactly_one_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config"]) == 2
    assert "FILE or -c FILE" in capsys.readouterr().err
    assert main(["check-config", "a.yaml", "-c", "b.yaml"]) == 2


def test_gbk_config_is_a_config_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = str(CASES / "not_utf8_gbk" / "config.yaml")
    # systemd's RestartPreventExitStatus=78: a bad config is not restarted in a loop
    assert main(["run", "-c", path]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:3  (file)  not UTF-8")
    assert "GBK" in err
    assert "Traceback" not in err
    assert main(["check-config", path]) == 1


def test_utf16_from_notepad_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes("site: {id: s, gateway_id: g}\n".encode("utf-16"))  # with a BOM
    assert main(["check-config", str(path)]) == 1
    assert f"{path}:1  (file)  not UTF-8" in capsys.readouterr().err


def test_utf8_with_bom_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_bytes(b"\xef\xbb\xbfsite: {id: s, gateway_id: g, name: \xe5\xad\xa6\xe6\xa0\xa1}\n")
    assert main(["check-config", str(path)]) == 0


def test_a_broken_profile_is_reported_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = CASES / "broken_profile" / "config.yaml"
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    # three devices use it, three problems in it: three lines, not nine
    assert err.count("school-air.yaml:") == 3
    assert "3 problems" in err


_READERS = """\
devices:
  - {id: b1-air, kind: modbus, profile: air7in1, host: 127.0.0.1, unit: 1}
  - {id: gate-1, kind: wg, serial: 423187757, host: 127.0.0.1}
  - {id: gate-2, kind: wg, serial: 423187758, host: 127.0.0.2}
"""


def test_card_readers_without_a_pseudonym_secret_are_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("site: {id: s, gateway_id: g}\n" + _READERS)
    # valid: the exit code stays 0, a warning line (EN + ZH) says cards would go out as null
    assert main(["check-config", str(path)]) == 0
    captured = capsys.readouterr()
    assert f"{path}: OK (3 devices" in captured.out
    lines = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"warning: {path}:4  devices[1].kind  wg reads cards (and 1 more)")
    assert "site.pseudonym_secret is not set" in lines[0]
    assert "card: null" in lines[0]
    assert "卡号将为空" in lines[0]


@pytest.mark.parametrize(
    "site",
    [
        "{id: s, gateway_id: g, pseudonym_secret: '${PSEUDO_SECRET}'}",
        "{id: s, gateway_id: g, raw_card_ids: true}",
    ],
    ids=["secret", "raw_card_ids"],
)
def test_card_readers_with_a_secret_or_raw_ids_give_no_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, site: str
) -> None:
    monkeypatch.setenv("PSEUDO_SECRET", "a-site-secret")
    path = tmp_path / "agent.yaml"
    path.write_text(f"site: {site}\n" + _READERS)
    assert main(["check-config", str(path)]) == 0
    assert "warning:" not in capsys.readouterr().err


def test_no_card_reader_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("site: {id: s, gateway_id: g}\n" + _READERS.split("  - {id: gate-1")[0])
    assert main(["check-config", str(path)]) == 0
    assert "warning:" not in capsys.readouterr().err
