"""printing renders plain data: it must not pull in the appliance, the sync
client or the upstream simulator, and reading a date must not load WeasyPrint."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(output.split())


def test_printing_imports_no_other_area():
    loaded = _modules_after("import printing.render, printing.verify, printing.cups, printing.glyphs")
    assert "weasyprint" in loaded  # the import really happened
    assert not {name for name in loaded if name.split(".")[0] in ("sync", "fallback", "cloudsim")}


def test_parsing_a_date_does_not_load_the_renderer():
    loaded = _modules_after("import printing.wareki")
    assert "weasyprint" not in loaded and "fontTools" not in loaded
