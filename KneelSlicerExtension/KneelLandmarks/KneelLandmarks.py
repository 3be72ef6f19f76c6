"""Kneel Landmarks: the 16 KNEEL landmarks of each knee on a loaded radiograph, as editable markups.

The shape of Slicer's scripted-module template: Module, ParameterNode, Widget, Logic, Test. All
MRML work is in ``KneelLandmarksLib`` (headless, tested with pytest against Slicer's MRML
classes); this file adds the panel, Slicer's parameter node and the installation of the
dependencies. ``kneel_monai`` and PyTorch are imported only once the user runs the module.
"""

import enum
import logging
import os
import shutil
import tempfile
from typing import Annotated

import qt
import slicer
import vtk
from KneelLandmarksLib import (
    CANCELLED,
    DONE,
    KneelInputError,
    LandmarksLogic,
    dependencies,
)
from KneelLandmarksLib import sampledata as kneelsampledata
from KneelLandmarksLib import testing as kneeltesting
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *
from slicer.util import VTKObservationMixin

SERVER_IMAGE_ATTRIBUTE = "KneelLandmarks.labelImageId"  # the MONAI Label image id of a volume from "Next sample"

#
# KneelLandmarks
#


class KneelLandmarks(ScriptedLoadableModule):
    """Uses ScriptedLoadableModule base class, available at:
    https://github.com/Slicer/Slicer/blob/main/Base/Python/slicer/ScriptedLoadableModule.py
    """

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Kneel Landmarks")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["kneel-monai developers"]
        self.parent.helpText = _("""
Finds the 16 KNEEL landmarks of each knee (9 on the tibial plateau, 7 on the femoral condyles) on a
loaded knee radiograph, as editable markups ("Right knee", "Left knee"; tibia red, femur green),
with the knee measurements in a table that follows the points when they are dragged. The model
runs in a background process, on the GPU when there is one. See docs/slicer.md of kneel-monai.
""")
        self.parent.acknowledgementText = _("""
The KNEEL method: A. Tiulpin, I. Melekhov, S. Saarakkala, "KNEEL: Knee Anatomical Landmark
Localization Using Hourglass Networks", ICCV 2019 workshops (arXiv:1907.12237). Built on MONAI
and 3D Slicer's scripted-module template.
""")

        # Additional initialization step after application startup is complete
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Register sample data sets in Sample Data module
#


def registerSampleData():
    """Add the sample radiograph to the Sample Data module. The file ships with the module: nothing is downloaded."""
    import SampleData

    logic = SampleData.SampleDataLogic
    if hasattr(logic, "registerCustomSampleDataCategory"):  # Slicer 5.12 and later: a translatable category title
        logic.registerCustomSampleDataCategory(kneelsampledata.CATEGORY, title=_("Kneel Landmarks"))
    kneelsampledata.register_sample_data(logic, os.path.dirname(os.path.abspath(__file__)))


#
# KneelLandmarksParameterNode
#


class Device(enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    GPU = "cuda"

    def label(self) -> str:
        return {"auto": _("Auto (GPU when available)"), "cpu": _("CPU"), "cuda": _("GPU (CUDA)")}[self.value]


@parameterNodeWrapper
class KneelLandmarksParameterNode:
    """
    inputVolume - the radiograph.
    device - where the model runs (auto: the GPU when PyTorch sees one).
    refine - the refinement pass (re-centre on the tibial centre, predict again).
    modelPath - a model folder; empty for the shipped model.
    fieldWidthMm - the imaged field's width for a JPEG/PNG export loaded with 1 mm pixels (0: not given).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    device: Device = Device.AUTO
    refine: bool = True
    modelPath: str = ""
    # bounded: the spin box connector otherwise opens it to ±inf
    fieldWidthMm: Annotated[float, WithinRange(0.0, 2000.0)] = 0.0


#
# KneelLandmarksWidget
#


class KneelLandmarksWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: wiring only. The work is in :class:`KneelLandmarksLogic`."""

    POLL_INTERVAL_MS = 250

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._request = None
        self._timer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/KneelLandmarks.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = KneelLandmarksLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.timeout.connect(self._onPoll)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.saveMarkupsButton.connect("clicked(bool)", self.onSaveMarkups)
        self.ui.exportCsvButton.connect("clicked(bool)", self.onExportCsv)
        self.ui.defaultModelButton.connect("clicked(bool)", self.onDefaultModel)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateResultsPanel)
        self.ui.connectButton.connect("clicked(bool)", self.onConnect)
        self.ui.nextSampleButton.connect("clicked(bool)", self.onNextSample)
        self.ui.submitLabelButton.connect("clicked(bool)", self.onSubmitLabel)
        self.ui.trainButton.connect("clicked(bool)", self.onTrain)
        self.ui.progressBar.hide()
        self._server = None

        self.initializeParameterNode()
        self.updateResultsPanel()

    def cleanup(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self._job = None
        if self._timer is not None:
            self._timer.stop()
        if self.logic is not None:
            self.logic.stop_observing()
            self.logic.stop_worker()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.logic.observe_results()
        self.updateResultsPanel()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        if self._job is not None:
            self._cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()
        self.updateResultsPanel()

    def onSceneEndImport(self, caller, event) -> None:
        # a loaded scene may hold landmarks: the measurements table follows their points again
        self.logic.observe_results()
        self.updateResultsPanel()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            if self.ui.modelPathLineEdit.currentPath != self._parameterNode.modelPath:
                self.ui.modelPathLineEdit.currentPath = self._parameterNode.modelPath
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        running = self._job is not None
        if running:
            self.ui.applyButton.enabled = True
            return
        self.ui.applyButton.enabled = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.toolTip = (_("Find the 16 landmarks of each knee") if self.ui.applyButton.enabled
                                       else _("Select a radiograph first"))
        model = self._parameterNode.modelPath if self._parameterNode else ""
        self.ui.modelInfoLabel.text = (
            _("a model folder: {folder}").format(folder=model) if model
            else _("shipped models (landmarks: real OAI knee crops + synthetic knees; knee finder: synthetic "
                   "films with real knee crops, a synthetic-only one as fallback)"))

    def onModelPathChanged(self, path) -> None:
        if self._parameterNode is not None and self._parameterNode.modelPath != path:
            self._parameterNode.modelPath = path

    def onDefaultModel(self) -> None:
        self.ui.modelPathLineEdit.currentPath = ""

    # ---- status
    def _setStatus(self, text, level="info") -> None:
        colours = {"info": "", "warning": "color: #b36b00;", "error": "color: #c00000;"}
        self.ui.statusLabel.setStyleSheet(colours[level])
        self.ui.statusLabel.text = text
        if level == "error":
            logging.error(f"Kneel Landmarks: {text}")
        elif text:
            logging.info(f"Kneel Landmarks: {text}")

    def _setRunning(self, running: bool) -> None:
        self.ui.applyButton.text = _("Cancel") if running else _("Apply")
        self.ui.applyButton.toolTip = _("Stop the model; the scene stays as it was") if running else _(
            "Find the 16 landmarks of each knee")
        self.ui.inputsCollapsibleButton.enabled = not running
        self.ui.saveMarkupsButton.enabled = not running
        self.ui.exportCsvButton.enabled = not running
        self.ui.progressBar.setVisible(running)
        self._checkCanApply()

    # ---- run
    def onApplyButton(self) -> None:
        if self._job is not None:
            self._cancel()
        else:
            self._start()

    def _start(self) -> None:
        parameters = self._parameterNode
        try:
            if not self.logic.setupDependencies():
                self._setStatus(_("Nothing was run: the module's Python packages are not installed."), "warning")
                return
            volume = parameters.inputVolume
            if self.logic.results_for(volume) is not None and not slicer.util.confirmOkCancelDisplay(
                    _("'{name}' already has landmarks. Replace them (unsaved edits are lost)?").format(
                        name=volume.GetName())):
                return
            request = self.logic.prepare(volume, parameters.device.value, parameters.refine, parameters.modelPath,
                                         parameters.fieldWidthMm or None)
            self._job = self.logic.start_prediction(request)
            self._request = request
        except KneelInputError as err:
            self._setStatus(str(err), "error")
            return
        except Exception as err:
            logging.exception("Kneel Landmarks could not start")
            self._setStatus(_("Could not start the model: {error}").format(error=err), "error")
            return
        warnings = " ".join(request.radiograph.messages)
        self._setStatus((warnings + " " if warnings else "") + _("Starting the model…"),
                        "warning" if warnings else "info")
        self._setRunning(True)
        self._timer.start()

    def _cancel(self) -> None:
        self._job.cancel()
        self._onPoll()

    def _onPoll(self) -> None:
        if self._job is None:
            self._timer.stop()
            return
        status = self._job.poll()
        if not status.finished:
            warnings = " ".join(self._request.radiograph.messages)
            self._setStatus((warnings + " " if warnings else "") + _("Running ({seconds:.0f} s): {line}").format(
                seconds=status.elapsed_s, line=status.message), "warning" if warnings else "info")
            return
        self._timer.stop()
        job, request = self._job, self._request
        self._job = self._request = None
        self._setRunning(False)
        if status.state == DONE:
            try:
                results = self.logic.add_results(request, job.result())
            except KneelInputError as err:
                self._setStatus(str(err), "error")
            except Exception as err:
                logging.exception("Kneel Landmarks could not add the results")
                self._setStatus(_("Could not add the landmarks ({error}); the scene is unchanged.").format(
                    error=err), "error")
            else:
                slicer.util.setSliceViewerLayers(background=results.volume, fit=True, rotateToVolumePlane=True)
                level = "warning" if request.radiograph.messages else "info"
                self._setStatus(_("Done in {seconds:.1f} s. ").format(seconds=status.elapsed_s)
                                + " ".join(results.messages), level)
        elif status.state == CANCELLED:
            self._setStatus(_("Cancelled; the scene is unchanged."), "warning")
        else:
            logging.error("Kneel Landmarks: the prediction process said:\n" + "\n".join(status.lines))
            self._setStatus(_("The model failed: {message}. The scene is unchanged.").format(
                message=status.message), "error")
        job.close()
        self.updateResultsPanel()

    # ---- results
    def updateResultsPanel(self, *args) -> None:
        volume = self.ui.inputSelector.currentNode()
        results = self.logic.results_for(volume) if volume is not None else None
        self.ui.measurementsTableView.setMRMLTableNode(results.table if results is not None else None)
        has = results is not None and bool(results.knees)
        self.ui.saveMarkupsButton.enabled = has and self._job is None
        self.ui.exportCsvButton.enabled = has and self._job is None
        if has:
            names = ", ".join(node.GetName() for node in results.knees.values())
            self.ui.resultsLabel.text = _(
                "{names} on '{volume}': drag a point to correct it; the table follows.").format(names=names,
                                                                                               volume=volume.GetName())

    def onSaveMarkups(self) -> None:
        volume = self.ui.inputSelector.currentNode()
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Folder for the landmark files"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not save the landmarks."), waitCursor=True):
            paths = self.logic.save_markups(volume, folder)
            self._setStatus(_("Saved {files}.").format(files=", ".join(str(p) for p in paths)))

    def onExportCsv(self) -> None:
        volume = self.ui.inputSelector.currentNode()
        dialog = qt.QFileDialog(slicer.util.mainWindow(), _("Cohort CSV (rows are added to an existing one)"), "",
                                _("CSV files (*.csv)"))
        dialog.setAcceptMode(qt.QFileDialog.AcceptSave)
        dialog.setOption(qt.QFileDialog.DontConfirmOverwrite, True)  # an existing cohort CSV gets rows added
        dialog.setDefaultSuffix("csv")
        dialog.selectFile("cohort.csv")
        if not dialog.exec_() or not dialog.selectedFiles():
            return
        path = dialog.selectedFiles()[0]
        with slicer.util.tryWithErrorDisplay(_("Could not export the cohort CSV row."), waitCursor=True):
            written = self.logic.export_cohort_csv(volume, path)
            self._setStatus(_("Cohort CSV rows written to {path}.").format(path=written))


    # ---- MONAI Label server (KneelLandmarksLib.server); short requests, run with a wait cursor
    def onConnect(self) -> None:
        from KneelLandmarksLib.server import LabelServer

        with slicer.util.tryWithErrorDisplay(_("Could not connect to the MONAI Label server."), waitCursor=True):
            server = LabelServer(self.ui.serverUrlLineEdit.text.strip() or "http://127.0.0.1:8000")
            info = server.info()
            self._server = server
            self.ui.serverStatusLabel.text = _("Connected to {url}: {name}, model '{model}'.").format(
                url=server.url, name=info.get("name", "MONAI Label"), model=server.model)

    def _connected(self) -> bool:
        """Connect on first use; False (the error already shown) when the server cannot be reached."""
        if self._server is None:
            self.onConnect()
        return self._server is not None

    def onNextSample(self) -> None:
        if not self._connected():
            return
        with slicer.util.tryWithErrorDisplay(_("Could not get the next sample."), waitCursor=True):
            strategy = self.ui.strategyComboBox.currentText
            image_id = self._server.next_sample(strategy)
            path = self._server.download_image(image_id, slicer.app.temporaryPath + "/KneelLandmarks")
            volume = slicer.util.loadVolume(str(path))
            volume.SetAttribute(SERVER_IMAGE_ATTRIBUTE, image_id)
            self.ui.inputSelector.setCurrentNode(volume)
            results = self.logic.add_results(self.logic.prepare(volume, device="cpu"), self._server.infer(image_id))
            self.ui.serverStatusLabel.text = _(
                "'{image}' ({strategy}): correct the landmarks, then Submit label.").format(image=image_id,
                                                                                          strategy=strategy)
            self._setStatus(" ".join(results.messages))
            self.updateResultsPanel()

    def onSubmitLabel(self) -> None:
        volume = self.ui.inputSelector.currentNode()
        image_id = volume.GetAttribute(SERVER_IMAGE_ATTRIBUTE) if volume is not None else None
        if self._server is None or not image_id:
            self.ui.serverStatusLabel.text = _("Load a radiograph with Next sample first: it has no server image id.")
            return
        with slicer.util.tryWithErrorDisplay(_("Could not submit the label."), waitCursor=True):
            self._server.submit(image_id, self.logic.edited_prediction(volume))
            self.ui.serverStatusLabel.text = _("Label of '{image}' stored on the server.").format(image=image_id)

    def onTrain(self) -> None:
        if not self._connected():
            return
        with slicer.util.tryWithErrorDisplay(_("Could not start training."), waitCursor=True):
            self._server.train({"train_roi": bool(self.ui.trainRoiCheckBox.checked)})
            self.ui.serverStatusLabel.text = _("Training started on the server; its next answers use the new model.")


#
# KneelLandmarksLogic
#


class KneelLandmarksLogic(ScriptedLoadableModuleLogic, LandmarksLogic):
    """:class:`KneelLandmarksLib.LandmarksLogic` on Slicer's scene, DICOM database and ``PythonSlicer``,
    plus the parameter node and the installation of the dependencies."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self.moduleDir = os.path.dirname(os.path.abspath(__file__))
        self.packageRoot = dependencies.package_root(self.moduleDir)
        dependencies.add_package_root_to_path(self.packageRoot)
        LandmarksLogic.__init__(
            self, slicer.mrmlScene, file_for_instance=self._fileForInstance,
            python=shutil.which("PythonSlicer") or "PythonSlicer", env=slicer.util.startupEnvironment(),
            package_root=self.packageRoot)

    def getParameterNode(self):
        return KneelLandmarksParameterNode(super().getParameterNode())

    def start_prediction(self, request):
        """The background prediction process runs in ``PythonSlicer``, which Slicer puts on the PATH."""
        if shutil.which("PythonSlicer") is None:
            raise KneelInputError(_("PythonSlicer was not found on the PATH; the model cannot run in the background."))
        return LandmarksLogic.start_prediction(self, request)

    @staticmethod
    def _fileForInstance(uid: str) -> str:
        database = slicer.dicomDatabase
        return database.fileForInstance(uid) if database is not None and database.isOpen else ""

    def requirements(self) -> list:
        return dependencies.read_requirements(os.path.join(self.moduleDir, "Resources", "requirements.txt"))

    def dependenciesReady(self) -> bool:
        return not dependencies.missing_dependencies(self.requirements())

    def setupDependencies(self, askConfirmation: bool = True) -> bool:
        """Install what is missing (PyTorch through the PyTorch extension, the rest with pip), after asking.

        Returns False when the user declined; raises :class:`KneelInputError` when it cannot be done.
        """
        import importlib.util

        if self.dependenciesReady():
            return True
        if self.packageRoot is None and importlib.util.find_spec("kneel_monai") is None:
            raise KneelInputError(_("kneel_monai was not found next to the module: install the extension from a build, "
                                    "or add the KneelLandmarks folder of a kneel-monai checkout in the module paths."))
        needTorch = importlib.util.find_spec("torch") is None
        missing = dependencies.missing_requirements(self.requirements())
        listed = (["torch (PyTorch extension)"] if needTorch else []) + missing
        if askConfirmation and listed and not slicer.util.confirmOkCancelDisplay(
                _("Kneel Landmarks needs these Python packages in Slicer: {packages}. Install them now? "
                  "(This can take several minutes.)").format(packages=", ".join(listed)),
                windowTitle=_("Kneel Landmarks")):
            return False
        if needTorch:
            try:
                import PyTorchUtils
            except ModuleNotFoundError:
                raise KneelInputError(_("This module needs the PyTorch extension: install it from the Extensions "
                                        "Manager and restart Slicer.")) from None
            torchLogic = PyTorchUtils.PyTorchUtilsLogic()
            if not torchLogic.torchInstalled() and torchLogic.installTorch(askConfirmation=False) is None:
                raise KneelInputError(_("PyTorch could not be installed (see the PyTorch Utils module)."))
        if missing:
            with slicer.util.WaitCursor():
                slicer.util.pip_install(missing)
        for problem in dependencies.mismatched_requirements(self.requirements()):
            logging.warning(f"Kneel Landmarks: {problem}; Slicer's own copy is kept")
        error = dependencies.kneel_importable()
        if error is not None:
            raise KneelInputError(_("kneel_monai does not import after the installation: {error}").format(error=error))
        return True


#
# KneelLandmarksTest
#


class KneelLandmarksTest(ScriptedLoadableModuleTest):
    """The checks of the pytest suite (``tests/test_slicer_logic.py``), run inside Slicer."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_KneelLandmarksBadInputs()
        self.setUp()
        self.test_KneelLandmarksOnSyntheticRadiograph()

    def _logic(self):
        """The module's logic; fails (MissingDependencies, saying what to install) when it cannot be tested."""
        logic = KneelLandmarksLogic()
        dependencies.require_dependencies(logic.requirements())
        return logic

    def test_KneelLandmarksBadInputs(self):
        logic = self._logic()
        messages = kneeltesting.check_bad_inputs(logic, slicer.mrmlScene)
        self.delayDisplay("Bad inputs refused: " + "; ".join(messages))

    def test_KneelLandmarksOnSyntheticRadiograph(self):
        logic = self._logic()
        scene = slicer.mrmlScene
        volume, sample = kneeltesting.synthetic_knee_volume(scene, 9_100_002)
        request = logic.prepare(volume, device="auto")
        prediction = logic.predict_in_process(request)
        kneeltesting.check_failed_add_rolls_back(logic, scene, request, prediction)
        results = logic.add_results(request, prediction)
        errors = kneeltesting.check_landmarks_on_truth(results, volume, sample)
        self.delayDisplay("Landmarks on the ground truth: " + ", ".join(
            f"{side} max {err.max():.2f} mm" for side, err in errors.items()))
        kneeltesting.check_point_drag_updates_table(logic, results)
        with tempfile.TemporaryDirectory() as folder:
            kneeltesting.check_save_and_reload(logic, scene, volume, results, folder)

        job = logic.start_prediction(request)  # the background process, as the panel runs it
        while not job.poll().finished:
            slicer.app.processEvents()
            qt.QThread.msleep(100)
        status = job.poll()
        self.assertEqual(status.state, DONE, status.message)
        background = job.result()
        for side in ("R", "L"):
            for a, b in zip(background["knees"][side]["landmarks_px"], prediction["knees"][side]["landmarks_px"]):
                self.assertAlmostEqual(a[0], b[0], delta=0.05)
                self.assertAlmostEqual(a[1], b[1], delta=0.05)
        self.delayDisplay("Test passed")
