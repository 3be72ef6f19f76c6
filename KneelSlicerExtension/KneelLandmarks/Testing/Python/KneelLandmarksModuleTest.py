"""Runs the Kneel Landmarks self-test inside Slicer (``ctest -R KneelLandmarksModuleTest`` in a build).

The same checks run headless in kneel-monai's pytest suite (``tests/test_slicer_logic.py``) against
Slicer's MRML classes from the ``slicer-core`` package.
"""

import unittest

import slicer


class KneelLandmarksModuleTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def test_module_self_test(self):
        import KneelLandmarks

        KneelLandmarks.KneelLandmarksTest().runTest()
