"""Make docs/napari_predict.png: the Predict widget after restoring a real image in napari.

    xvfb-run -a python docs/napari_screenshot.py     # needs the dev extra (napari, stardist data)

stardist's 512x512 nuclei image, the shipped ``models/nuclei2d.onnx``; the viewer shows the
input and the deconvolved layer side by side (grid mode) with the widget docked.
"""

from __future__ import annotations

from pathlib import Path

import napari
import tifffile
from qtpy.QtWidgets import QApplication
from zsdeconvnet.napari_plugin.widgets import PredictWidget
from zsdeconvnet.training.sample_data import stardist_nuclei

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1400, 800)
    image = tifffile.imread(stardist_nuclei())[:256, :256]
    viewer.add_image(image, name="nuclei", scale=(0.325, 0.325))
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="ZS-DeconvNet Predict", area="right")
    widget.image.value = viewer.layers["nuclei"]
    widget.model.value = ROOT / "models" / "nuclei2d.onnx"
    widget.run()
    while "nuclei deconvolved" not in viewer.layers:
        QApplication.processEvents()
    viewer.layers["nuclei denoised"].visible = False
    viewer.grid.enabled = True
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
    out = ROOT / "docs" / "napari_predict.png"
    viewer.screenshot(str(out), canvas_only=False, flash=False)
    print(f"wrote {out}")
    viewer.close()


if __name__ == "__main__":
    main()
