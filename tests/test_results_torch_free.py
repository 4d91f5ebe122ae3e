"""Reading and exporting a result never imports torch (napari's reader and `sum-hq export RESULT` start fast)."""

import subprocess
import sys

import numpy as np
import tifffile


def test_exporting_a_batch_style_result_loads_no_torch(tmp_path):
    labels = np.zeros((300, 400), np.uint32)
    labels[200:260, 300:380] = 7
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    tifffile.imwrite(tmp_path / "uncertainty.tif", np.full(labels.shape, 0.25, np.float32))
    code = (
        "import sys\n"
        "from sum_core.results import export_result, open_result\n"
        "import sum_core.batch, sum_core.export\n"
        f"result = open_result({str(tmp_path / 'labels.tif')!r}, {str(tmp_path / 'uncertainty.tif')!r})\n"
        f"export_result(result, {str(tmp_path / 'objects.csv')!r}, to='csv', progress=False)\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]
    rows = (tmp_path / "objects.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].split(",")[0] == "7"
