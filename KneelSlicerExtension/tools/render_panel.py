"""Load the module's panel (``Resources/UI/KneelLandmarks.ui``) outside Slicer, and draw it to a PNG.

Slicer's own widgets (``qMRMLNodeComboBox``, ``ctkCollapsibleButton``, ``ctkPathLineEdit``,
``qMRMLTableView``, ``qMRMLWidget``) exist only in Slicer; here each is a small PySide6 stand-in of
the Qt class it extends, registered with ``QUiLoader`` under the Slicer class name, so the very
``.ui`` file that Slicer loads is parsed and laid out by Qt's own loader — a broken file fails to
load — and the picture shows the panel's real layout and texts.

    QT_QPA_PLATFORM=offscreen python KneelSlicerExtension/tools/render_panel.py docs/images/slicer_panel.png --demo

``--demo`` fills the panel as after a run on ``samples/synthetic_bilateral_knee.dcm``: the
measurements come from the shipped model, run in this process.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import Property, QFile, QIODevice
from PySide6.QtGui import QColor, QPalette
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLineEdit,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QWidget,
)

MODULE_DIR = Path(__file__).resolve().parents[1] / "KneelLandmarks"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "KneelLandmarks.ui"
REPO_ROOT = Path(__file__).resolve().parents[2]


def _passive(name: str, kind: type, default):
    """A Qt property the stand-in only stores (e.g. ``nodeTypes``), so the loader finds it."""
    attribute = f"_{name}"

    def getter(self):
        return getattr(self, attribute, default)

    def setter(self, value):
        setattr(self, attribute, value)

    return Property(kind, getter, setter)


class qMRMLWidget(QWidget):
    pass


class ctkCollapsibleButton(QGroupBox):
    """A titled frame (Slicer draws a collapsible button bar)."""

    def _get_text(self) -> str:
        return self.title().lstrip("▾ ")

    def _set_text(self, text: str) -> None:
        self.setTitle(f"▾ {text}")

    text = Property(str, _get_text, _set_text)
    collapsed = _passive("collapsed", bool, False)


class qMRMLNodeComboBox(QComboBox):
    nodeTypes = _passive("nodeTypes", list, [])
    hideChildNodeTypes = _passive("hideChildNodeTypes", list, [])
    showChildNodeTypes = _passive("showChildNodeTypes", bool, True)
    noneEnabled = _passive("noneEnabled", bool, False)
    addEnabled = _passive("addEnabled", bool, True)
    removeEnabled = _passive("removeEnabled", bool, True)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.addItem("None")


class ctkPathLineEdit(QWidget):
    """A line edit with a browse button."""

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.lineEdit = QLineEdit(self)
        self.lineEdit.setPlaceholderText("(shipped model)")
        browse = QToolButton(self)
        browse.setText("…")
        layout.addWidget(self.lineEdit)
        layout.addWidget(browse)

    def _get_path(self) -> str:
        return self.lineEdit.text()

    def _set_path(self, path: str) -> None:
        self.lineEdit.setText(path)

    currentPath = Property(str, _get_path, _set_path)
    filters = _passive("filters", int, 0)


class qMRMLTableView(QTableWidget):
    pass


STAND_INS = (qMRMLWidget, ctkCollapsibleButton, qMRMLNodeComboBox, ctkPathLineEdit, qMRMLTableView)


def application() -> QApplication:
    app = QApplication.instance() or QApplication([])
    app.setStyle("Fusion")
    palette = app.palette()
    palette.setColor(QPalette.Window, QColor(246, 246, 246))
    app.setPalette(palette)
    return app


def load_panel(ui_file: str | os.PathLike = UI_FILE) -> tuple[QWidget, QUiLoader]:
    """The panel widget loaded from the ``.ui`` file; raises ``RuntimeError`` with the loader's message."""
    application()
    loader = QUiLoader()
    for cls in STAND_INS:
        loader.registerCustomWidget(cls)
    handle = QFile(str(ui_file))
    if not handle.open(QIODevice.ReadOnly):
        raise RuntimeError(f"cannot open {ui_file}")
    try:
        widget = loader.load(handle)
    finally:
        handle.close()
    if widget is None:
        raise RuntimeError(f"{ui_file}: {loader.errorString()}")
    return widget, loader


def demo_prediction() -> dict:
    """The shipped model's prediction on the repository's sample radiograph."""
    import time

    from kneel_monai.inference import KneelPredictor, default_model_dirs

    started = time.perf_counter()
    predictor = KneelPredictor(*default_model_dirs(), device="cpu")
    prediction = predictor.predict_file(REPO_ROOT / "samples" / "synthetic_bilateral_knee.dcm").to_dict()
    prediction["demo_elapsed_s"] = time.perf_counter() - started
    return prediction


def fill_demo(panel: QWidget, prediction: dict) -> None:
    """Show the panel as after a run (the texts the Widget writes)."""
    from kneel_monai.io.markups import KNEE_NAMES
    from kneel_monai.measurements import MEASUREMENTS

    names = {"lateral_jsw_mm": "lateral joint space width", "medial_jsw_mm": "medial joint space width",
             "tibial_plateau_width_mm": "tibial plateau width", "femoral_condyle_width_mm": "femoral condyle width",
             "joint_line_angle_deg": "joint-line angle"}
    selector = panel.findChild(QComboBox, "inputSelector")
    selector.clear()
    selector.addItem("synthetic_bilateral_knee")
    knees = [s for s in ("R", "L") if prediction["knees"][s]["present"]]
    table = panel.findChild(QTableWidget, "measurementsTableView")
    table.setColumnCount(2 + len(knees))
    table.setRowCount(len(MEASUREMENTS))
    table.setHorizontalHeaderLabels(["Measurement", "Unit"] + [KNEE_NAMES[s] for s in knees])
    table.verticalHeader().setVisible(False)
    for row, (key, unit) in enumerate(MEASUREMENTS.items()):
        table.setItem(row, 0, QTableWidgetItem(names[key]))
        table.setItem(row, 1, QTableWidgetItem(unit))
        for column, side in enumerate(knees, start=2):
            table.setItem(row, column, QTableWidgetItem(f"{prediction['knees'][side]['measurements'][key]:.2f}"))
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
    table.horizontalHeader().setStretchLastSection(True)
    summary = "; ".join(f"{KNEE_NAMES[s]}: 16 landmarks, quality {prediction['knees'][s]['quality']}" for s in knees)
    from PySide6.QtWidgets import QLabel

    panel.findChild(QLabel, "statusLabel").setText(f"Done in {prediction.get('demo_elapsed_s', 0):.1f} s. {summary}.")
    panel.findChild(QLabel, "resultsLabel").setText(
        f"{', '.join(KNEE_NAMES[s] for s in knees)} on 'synthetic_bilateral_knee': drag a point to correct it; "
        "the table follows.")
    panel.findChild(QWidget, "progressBar").hide()


def render(out: str | os.PathLike, demo: bool = False, width: int = 440, ui_file: str | os.PathLike = UI_FILE) -> Path:
    panel, _ = load_panel(ui_file)
    if demo:
        fill_demo(panel, demo_prediction())
    panel.resize(width, panel.sizeHint().height())
    panel.adjustSize()
    panel.resize(width, max(panel.sizeHint().height(), panel.height()))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not panel.grab().save(str(out)):
        raise RuntimeError(f"could not write {out}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="PNG file to write")
    parser.add_argument("--demo", action="store_true", help="fill the panel as after a run on the sample radiograph")
    parser.add_argument("--width", type=int, default=440)
    args = parser.parse_args()
    print(render(args.out, args.demo, args.width))


if __name__ == "__main__":
    main()
