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
