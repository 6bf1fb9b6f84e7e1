"""bench.invariance on the tiny random model: the service's way changes no float."""

from __future__ import annotations

import re

import pytest

from bench.invariance import main


def test_the_service_way_matches_each_row_alone(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--random-model", "tiny", "--max-batch", "6", "--rounds", "1", "--row-threads", "2"])
    out = capsys.readouterr().out
    assert "21 rows in batches of every size 1..6" in out
    service = re.search(r"service \(1-row passes on row lanes\)\s+rows with other floats\s+(\d+)", out)
    assert service is not None and service.group(1) == "0", out
    assert re.search(r"one pass per batch\s+\d+\.\d+ ms/row", out), out


@pytest.mark.parametrize("fmt", ["contiguous", "channels_last"])
def test_either_decoder_layout_keeps_the_contract(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    main(["--random-model", "tiny", "--max-batch", "4", "--rounds", "1", "--decoder-memory-format", fmt])
    out = capsys.readouterr().out
    assert f"decoder {fmt}," in out
    service = re.search(r"service \(1-row passes on row lanes\)\s+rows with other floats\s+(\d+)", out)
    assert service is not None and service.group(1) == "0", out
