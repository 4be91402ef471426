"""The project's promise for bad input, checked one way: exit status 2 and one `error: ...` line, no traceback."""

from __future__ import annotations

import pytest


def error_line(err: str, *needles: str, start: str = "") -> str:
    """The one line that is all of `err`: `error: START...`, holding every needle, no traceback; returned stripped."""
    assert err.count("\n") == 1 and err.endswith("\n") and err.startswith(f"error: {start}"), err[:2000]
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err.strip()


def one_error(capture: pytest.CaptureFixture, code: int | None, *needles: str, start: str = "") -> str:
    """A command's refusal as captured: exit status 2 (`code`: what main() returned; None when the caller checked
    it) and one error line on stderr (see error_line), with no traceback on stdout either."""
    out, err = capture.readouterr()
    assert code is None or code == 2, (code, err[:2000])
    assert "Traceback" not in out
    return error_line(err, *needles, start=start)
