"""The Kneel Landmarks panel (``Resources/UI/KneelLandmarks.ui``): parsed, loaded by Qt, wired, drawn.

Slicer's own widgets exist only in Slicer; ``KneelSlicerExtension/tools/render_panel.py`` registers a
PySide6 stand-in for each with ``QUiLoader`` (offscreen), so Qt's loader reads the very file Slicer
loads. Without PySide6 the module is skipped (a failure under CI).
"""

import ast
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO_ROOT / "KneelSlicerExtension" / "KneelLandmarks"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "KneelLandmarks.ui"
MODULE_FILE = MODULE_DIR / "KneelLandmarks.py"

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
try:
    import PySide6  # noqa: F401
except ImportError as err:
    message = f"PySide6 is not installed ({err}); pip install -e '.[slicer]'"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)

from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QLabel,
    QProgressBar,
    QPushButton,
    QTableView,
    QToolButton,
)

sys.path.insert(0, str(REPO_ROOT / "KneelSlicerExtension" / "tools"))
import render_panel

#: Slicer/CTK classes the .ui may use, with the Qt class each extends
SLICER_WIDGETS = {"qMRMLWidget": "QWidget", "qMRMLNodeComboBox": "QWidget", "ctkCollapsibleButton": "QWidget",
                  "ctkPathLineEdit": "QWidget", "qMRMLTableView": "QTableView"}


@pytest.fixture(scope="module")
def ui_tree():
    return ET.parse(UI_FILE).getroot()


@pytest.fixture(scope="module")
def panel():
    widget, _ = render_panel.load_panel(UI_FILE)
    return widget


def _module_ast():
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"))


def test_every_widget_class_is_qt_or_a_declared_slicer_widget(ui_tree):
    from PySide6.QtUiTools import QUiLoader

    render_panel.application()
    qt_classes = set(QUiLoader().availableWidgets())
    declared = {c.findtext("class"): c.findtext("extends") for c in ui_tree.iter("customwidget")}
    assert declared == {k: v for k, v in SLICER_WIDGETS.items() if k in declared}, declared
    for widget in ui_tree.iter("widget"):
        cls = widget.get("class")
        assert cls in qt_classes or cls in declared, f"{widget.get('name')}: unknown class {cls}"
    assert {stand_in.__name__ for stand_in in render_panel.STAND_INS} == set(SLICER_WIDGETS)


def test_the_widget_code_uses_only_names_the_ui_defines(ui_tree):
    names = {w.get("name") for w in ui_tree.iter("widget")}
    used = {node.attr for node in ast.walk(_module_ast()) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"}
    assert used, "the Widget reads no self.ui.<name>?"
    assert used <= names, f"used in KneelLandmarks.py but not in the .ui: {sorted(used - names)}"


def test_parameter_names_match_the_parameter_node(ui_tree):
    (node_class,) = [n for n in _module_ast().body if isinstance(n, ast.ClassDef) and n.name ==
                     "KneelLandmarksParameterNode"]
    fields = {s.target.id: ast.unparse(s.annotation) for s in node_class.body if isinstance(s, ast.AnnAssign)}
    assert fields == {"inputVolume": "vtkMRMLScalarVolumeNode", "device": "Device", "refine": "bool",
                      "modelPath": "str", "fieldWidthMm": "Annotated[float, WithinRange(0.0, 2000.0)]"}
    bound = {}
    for widget in ui_tree.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = widget.get("class")
    # parameterNodeWrapper's connectors: node ↔ qMRMLNodeComboBox, Enum ↔ QComboBox, bool ↔ QCheckBox,
    # float ↔ QDoubleSpinBox
    assert bound == {"inputVolume": "qMRMLNodeComboBox", "device": "QComboBox", "refine": "QCheckBox",
                     "fieldWidthMm": "QDoubleSpinBox"}


def test_qt_loads_the_panel_with_its_settings(panel):
    apply = panel.findChild(QPushButton, "applyButton")
    assert apply is not None and apply.text() == "Apply"
    device = panel.findChild(QComboBox, "deviceComboBox")
    assert [device.itemText(i) for i in range(device.count())] == ["Auto (GPU when available)", "CPU", "GPU (CUDA)"]
    assert panel.findChild(QCheckBox, "refineCheckBox").isChecked()
    selector = panel.findChild(render_panel.qMRMLNodeComboBox, "inputSelector")
    assert selector.nodeTypes == ["vtkMRMLScalarVolumeNode"]
    assert selector.hideChildNodeTypes == ["vtkMRMLLabelMapVolumeNode"]
    assert isinstance(panel.findChild(QTableView, "measurementsTableView"), render_panel.qMRMLTableView)
    assert panel.findChild(render_panel.ctkPathLineEdit, "modelPathLineEdit") is not None
    bar = panel.findChild(QProgressBar, "progressBar")
    assert (bar.minimum(), bar.maximum()) == (0, 0)  # busy indicator while the model runs
    assert "Apply" in panel.findChild(QLabel, "statusLabel").text()
    assert panel.findChild(QPushButton, "saveMarkupsButton").text() == "Save landmarks (.mrk.json)…"
    assert panel.findChild(QPushButton, "exportCsvButton").text() == "Export cohort CSV row…"
    assert panel.findChild(QToolButton, "defaultModelButton").text() == "Default"
    roi = panel.findChild(QCheckBox, "trainRoiCheckBox")  # the server's train_roi, off unless asked
    assert roi is not None and not roi.isChecked()


def test_a_broken_ui_file_is_caught(tmp_path):
    text = UI_FILE.read_text(encoding="utf-8")
    broken = tmp_path / "broken.ui"
    broken.write_text(text.replace("</layout>", "", 1), encoding="utf-8")
    with pytest.raises(ET.ParseError):
        ET.parse(broken)
    with pytest.raises(RuntimeError):
        render_panel.load_panel(broken)


def test_the_panel_renders_offscreen(tmp_path):
    from PySide6.QtGui import QImage

    path = render_panel.render(tmp_path / "panel.png")
    image = QImage(str(path))
    assert image.width() == 440 and image.height() > 400
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(colours) > 20  # text and frames, not a blank picture


def test_the_docs_picture_is_there():
    image = REPO_ROOT / "docs" / "images" / "slicer_panel.png"
    assert image.is_file() and image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
