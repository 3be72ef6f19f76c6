"""Mutation spot-check: plant small, realistic bugs one at a time and see whether the tests catch them.

Each mutant replaces one exact piece of source text (refused if the text is not found exactly once, so a
refactoring shows up as "stale" rather than as a silent pass), runs the tests named for it, and restores the
file whatever happens. A mutant the tests pass is a **survivor**: a wrong answer nobody would notice.

    python benchmarks/mutation_spotcheck.py            # every mutant (about 5 minutes on 2 cores)
    python benchmarks/mutation_spotcheck.py --only decode_offset quality_lateral_jsw

Run it before a release (not in every CI run): prints a table, writes ``benchmarks/results/mutation.json``.
Never run it while editing the tree or running the suite: it changes source files while it runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    what: str


MUTANTS = [
    Mutant("decode_offset", "kneel_monai/model_io.py",
           'return 0.5 if self.networks[0].soft_argmax.convention == "pixel_center" else 0.0', "return 0.0",
           ("tests/test_inference_decode.py",), "half-pixel decode bias in inference"),
    Mutant("split_shift", "kneel_monai/transforms/functional.py", "    shift[1, 2] = mid\n",
           "    shift[1, 2] = mid - 1\n", ("tests/test_inference_decode.py",),
           "the right image half placed one pixel off"),
    Mutant("resample_half_pixel", "kneel_monai/transforms/functional.py", "[[scale_r, 0, 0.5 * scale_r - 0.5]",
           "[[scale_r, 0, 0.5 * scale_r]", ("tests/test_inference_decode.py",),
           "the resampling's half-pixel term wrong on rows"),
    Mutant("warp_points_frozen", "kneel_monai/transforms/augment.py",
           "            d[key] = _apply_homography(d[key], hom)\n", "            d[key] = d[key]\n",
           ("tests/test_data.py::test_the_training_chain_moves_every_landmark_with_the_image",),
           "the training warp moves the image but not its landmarks"),
    Mutant("mirror_side", "kneel_monai/inference.py",
           'crops = [self._roi_crop(image, c, mirror=s == "L") for s, c in starts]',
           'crops = [self._roi_crop(image, c, mirror=s == "R") for s, c in starts]',
           ("tests/test_inference_decode.py",), "the wrong knee mirrored"),
    Mutant("spread_in_px", "kneel_monai/inference.py",
           "draws.append([points_to_mm(self._to_original(coords[i], crops[i], image, offset), image.affine)",
           "draws.append([(self._to_original(coords[i], crops[i], image, offset))",
           ("tests/test_predict.py::test_mc_dropout_spread_is_in_millimetres",), "MC-dropout spread in pixels"),
    Mutant("cohort_isolation", "kneel_monai/cohort.py",
           '                except Exception as err:  # noqa: BLE001 — one bad file must not stop a cohort\n'
           '                    failed.append(',
           '                except Exception as err:  # noqa: BLE001 — one bad file must not stop a cohort\n'
           '                    raise\n                    failed.append(',
           ("tests/test_cohort_faults.py",), "one radiograph failing after reading stops the cohort"),
    Mutant("atomic_cleanup", "kneel_monai/atomic.py", "        tmp.unlink(missing_ok=True)\n", "        pass\n",
           ("tests/test_cohort_faults.py::test_a_write_failing_half_way_leaves_the_old_file_and_no_temporary",),
           "a failed write leaves its temporary file"),
    Mutant("quality_lateral_jsw", "kneel_monai/quality.py", 'for name in ("lateral_jsw_mm", "medial_jsw_mm"):',
           'for name in ("medial_jsw_mm",):', ("tests/test_quality.py",), "the lateral JSW rule dropped"),
    Mutant("quality_confidence_boundary", "kneel_monai/quality.py", "if conf.mean() < t.mean_confidence:",
           "if conf.mean() <= t.mean_confidence:", ("tests/test_quality.py",), "a knee at the limit flagged"),
    Mutant("quality_width_boundary", "kneel_monai/quality.py", "if value is not None and not low <= value <= high:",
           "if value is not None and not low < value < high:", ("tests/test_quality.py",), "width limits exclusive"),
    Mutant("jsw_notch_edge", "kneel_monai/measurements.py", "MEDIAL_FEMUR: tuple[int, ...] = (14, 15)",
           "MEDIAL_FEMUR: tuple[int, ...] = (13, 14, 15)", ("tests/test_measurements.py",),
           "the notch edge counted in the medial JSW"),
    Mutant("jsw_spine", "kneel_monai/measurements.py", "LATERAL_TIBIA: tuple[int, ...] = (0, 1, 2)",
           "LATERAL_TIBIA: tuple[int, ...] = (0, 1, 2, 3)", ("tests/test_measurements.py",),
           "the tibial spine counted in the lateral JSW"),
    Mutant("confidence_window", "kneel_monai/inference.py",
           "window = ((ys - cy[..., None, None]).abs() <= radius) & ((xs - cx[..., None, None]).abs() <= radius)",
           "window = ((ys - cy[..., None, None]).abs() < radius) & ((xs - cx[..., None, None]).abs() < radius)",
           ("tests/test_confidence.py",), "the confidence window one pixel too small"),
    Mutant("roi_scaling_dropped", "kneel_monai/inference.py",
           "            crops = [self._roi_scaling(c) for c in crops]\n", "            pass\n",
           ("tests/test_roi_scaling.py", "tests/test_predict.py::test_inference_crops_exactly_what_training_and"
            "_evaluation_feed_the_network"), "the ROI scaling skipped at inference"),
    Mutant("shape_limit_inclusive", "kneel_monai/inference.py",
           "(limit is None or c.shape_distance <= limit)", "(limit is None or c.shape_distance < limit - 1)",
           ("tests/test_detection.py",), "the knee-shape limit tightened by one"),
    Mutant("zoo_partial_load", "kneel_monai/zoo.py", "        if untouched:\n", "        if False:\n",
           ("tests/test_bundle_zoo.py::test_monai_bundle_load_gives_the_shipped_landmark_network",),
           "monai.bundle.load of another network's weights silent again"),
    Mutant("local_search_skipped", "kneel_monai/inference.py",
           "        if not believed and self.scan.local_steps:", "        if False:",
           ("tests/test_detection.py::test_knees_beside_stage_1_are_found_by_looking_around_it_before_any_scan",),
           "no look around stage 1's proposals before the scan"),
    Mutant("local_grid_axes_swapped", "kneel_monai/detection.py",
           "x, y = centre[0] + dx * stride_mm / col_mm, centre[1] + dy * stride_mm / row_mm",
           "x, y = centre[0] + dx * stride_mm / row_mm, centre[1] + dy * stride_mm / col_mm",
           ("tests/test_detection.py::test_local_starts_surround_the_centre_in_millimetres_and_stay_on_the_image",),
           "the local grid's steps in the other axis's pixels"),
    Mutant("partner_zoom_ignored", "kneel_monai/detection.py",
           " and abs(knee.zoom / k.zoom - 1) < 0.05", "",
           ("tests/test_detection.py::test_a_partner_is_looked_for_again_only_from_the_same_knee_at_another_zoom",),
           "a lone knee's partner not looked for again at a better zoom"),
    Mutant("whole_image_skipped", "kneel_monai/inference.py",
           "        if not believed and self.scan.whole_image:  # one knee in the middle of the field: no half "
           "holds it", "        if False:  #",
           ("tests/test_detection.py::test_a_knee_alone_in_the_field_is_found_without_a_scan_for_a_second_one",),
           "no stage 1 on the whole image when the halves miss"),
    Mutant("no_room_ignored", "kneel_monai/detection.py",
           "    return max(x + 0.5, width_px - 0.5 - x) >= plateau_widths * plateau",
           "    return True", ("tests/test_detection.py::test_a_knee_alone_in_the_field_is_found_without_a_scan_for_a_"
                              "second_one",), "a single-knee field scanned for a second knee"),
    Mutant("roi_clahe_skipped", "kneel_monai/inference.py",
           "            low = stage1.local_contrast(low)\n", "            pass\n",
           ("tests/test_predict.py::test_stage1_reads_exactly_what_training_feeds_the_roi_network",),
           "stage 1's input not equalised at inference though its model file says so"),
    Mutant("pad_before_rounded_up", "kneel_monai/transforms/functional.py",
           "    before = [max(pad_size - s, 0) // 2 for s in size]\n",
           "    before = [(max(pad_size - s, 0) + 1) // 2 for s in size]\n",
           ("tests/test_lean_inference.py::test_pad_and_centre_crop_is_monais_spatial_pad_then_centre_crop",),
           "the network input padded one pixel off MONAI's SpatialPad on odd margins"),
    Mutant("monai_back_in_inference", "kneel_monai/detection.py", "import torch\n\nfrom .image import image_like\n",
           "import torch\nfrom monai.data import MetaTensor  # noqa: F401\n\nfrom .image import image_like\n",
           ("tests/test_lean_inference.py::test_predict_and_worker_do_not_import_monai",),
           "a MONAI import back on the inference path (cold start +2 s)"),
    Mutant("field_over_rows", "kneel_monai/io/reading.py", 'return self.width_mm / columns, "field_width"',
           'return self.width_mm / rows, "field_width"',
           ("tests/test_predict.py::test_field_size_gives_each_export_its_own_spacing",),
           "an export's spacing from the field's width over its rows"),
    Mutant("result_spacing_from_meta", "kneel_monai/inference.py", "    spacing = pixel_spacing(image.affine)\n",
           '    spacing = tuple(float(v) for v in meta["pixel_spacing_mm"])\n',
           ("tests/test_lean_inference.py::test_the_result_gives_the_spacing_of_the_pixels_its_landmarks_are_in",),
           "the result's spacing from the reader's metadata, stale once the image was resampled"),
    Mutant("composite_scale_inverted", "kneel_monai/synthetic/composite.py",
           "target_px, knee.spacing_mm / spacing_mm)", "target_px, spacing_mm / knee.spacing_mm)",
           ("tests/test_composite.py",), "a real knee pasted at the wrong size"),
    Mutant("single_field_shift_forgotten", "kneel_monai/synthetic/composite.py",
           '"landmarks_px": pts - [x0 - i * fw, y0]', '"landmarks_px": pts - [x0, y0]',
           ("tests/test_composite.py",), "the second single-knee field's landmarks left where the knee was"),
    Mutant("side_without_landmark_check", "kneel_monai/side.py",
           "    elif not landmarks_ok:\n", "    elif False:\n",
           ("tests/test_side.py",), "a side called sure from landmarks that are themselves flagged"),
    Mutant("fibula_sign", "kneel_monai/side.py", "    return (left - right) / spread",
           "    return (right - left) / spread",
           ("tests/test_side.py",), "the fibula evidence read from the wrong side"),
    Mutant("side_found_answer_competes", "kneel_monai/inference.py",
           "        confidence = {s: a.mean_confidence for s, a in again.items()}",
           "        confidence = {s: a.mean_confidence for s, a in best.items()}",
           ("tests/test_detection.py::test_a_lone_knee_s_side_compares_both_orientations_run_alike",),
           "the found answer (best of many starts) against one run of the other orientation, as in 0.4.3"),
    Mutant("header_view_ignored", "kneel_monai/inference.py",
           "        if header_says is not None:  # no model can make a lateral film an AP one",
           "        if False:",
           ("tests/test_detection.py::"
            "test_a_dicom_header_that_says_lateral_or_oblique_is_no_ap_knee_without_running_the_models",),
           "a lateral DICOM header not believed"),
    Mutant("mirror_back_off_by_one", "kneel_monai/inference.py",
           "            out[..., 0] = (width - 1) - out[..., 0]", "            out[..., 0] = width - out[..., 0]",
           ("tests/test_detection.py::test_a_mirrored_display_is_read_back_to_the_radiological_convention",),
           "a mirrored display's landmarks given back one pixel off"),
    Mutant("nrrd_fields_dropped", "KneelSlicerExtension/KneelLandmarks/KneelLandmarksLib/logic.py",
           'work_dir / "radiograph.nrrd", request.radiograph.header_tags)', 'work_dir / "radiograph.nrrd")',
           ("tests/test_slicer_logic.py::test_the_warm_process_is_handed_the_dicom_view",),
           "the Slicer module's background prediction without the DICOM's laterality and view"),
    Mutant("fallback_roi_skipped", "kneel_monai/inference.py",
           "        if not believed and fallback is not None and self.scan.fallback_roi:", "        if False:",
           ("tests/test_detection.py::test_the_fallback_roi_model_proposes_where_the_first_one_misses",),
           "the fallback ROI model's proposals never tried"),
    Mutant("fallback_not_loaded", "kneel_monai/model_io.py",
           "                      fallback=_load_fallback(config, config_path, device, _fallback_of))",
           "                      fallback=None)",
           ("tests/test_model_io.py::test_an_roi_model_loads_its_fallback_and_says_what_is_wrong_with_one",),
           "a model file's fallback silently ignored"),
    Mutant("near_miss_sweep_skipped", "kneel_monai/inference.py",
           "            if near:  # a knee judged at the wrong zoom misses the limit: judge it at its best one first",
           "            if False:",
           ("tests/test_detection.py::test_knees_shown_too_large_are_found_by_trying_the_near_misses_at_every_zoom",),
           "answers just beyond the shape limit never tried at other zooms"),
    Mutant("near_miss_band_open", "kneel_monai/detection.py",
           "        if (limit < c.shape_distance <= limit + margin and not at_same_place(",
           "        if (limit < c.shape_distance and not at_same_place(",
           ("tests/test_detection.py::test_near_misses_are_the_answers_just_beyond_the_limit_once_per_place_and_"
            "orientation",),
           "every answer beyond the limit swept, not only the near ones (the non-knee views' too)"),
    Mutant("eased_partner_never_taken", "kneel_monai/inference.py",
           "        return next((c for c in eased if self._believed(c, work, limit + margin, least)), None)",
           "        return None",
           ("tests/test_detection.py::test_the_other_knee_of_a_bilateral_film_is_believed_with_an_eased_shape_limit_"
            "and_flagged",),
           "the other knee of a bilateral film never eased (a knee replacement beside a found knee missed)"),
    Mutant("eased_partner_any_size", "kneel_monai/detection.py",
           "        if 1 / PARTNER_SIZE_RATIO <= ratio <= PARTNER_SIZE_RATIO:", "        if True:",
           ("tests/test_detection.py::test_an_eased_partner_is_a_partner_search_answer_just_beyond_the_limit_on_the_"
            "other_half_of_a_like_size",),
           "an eased partner of any size (a knee twice the found one's)"),
    Mutant("position_without_room", "kneel_monai/inference.py",
           "        return position if position is not None and room_for_partner(knee, w, self.scan.partner_room) "
           "else None",
           "        return position",
           ("tests/test_detection.py::test_a_lone_knee_off_centre_takes_its_side_from_its_place_only_where_a_second_"
            "knee_had_room",),
           "a lone knee's side from where it lies in a field with no room for a second knee (0.5.0)"),
    Mutant("position_over_sure_anatomy", "kneel_monai/inference.py",
           "        if position is not None and not (decision.sure and decision.side != position):",
           "        if position is not None:",
           ("tests/test_detection.py::test_a_lone_knee_off_centre_takes_its_side_from_its_place_only_where_a_second_"
            "knee_had_room",),
           "where a lone knee lies wins over its anatomy, sure, saying the other side"),
]


def run_mutant(mutant: Mutant) -> dict:
    path = ROOT / mutant.file
    original = path.read_text(encoding="utf-8")
    if original.count(mutant.old) != 1:
        return {"name": mutant.name, "result": "stale", "seconds": 0.0, "what": mutant.what}
    started = time.perf_counter()
    try:
        path.write_text(original.replace(mutant.old, mutant.new), encoding="utf-8")
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *mutant.tests],
                              cwd=ROOT, capture_output=True, text=True)
    finally:
        path.write_text(original, encoding="utf-8")
    result = "killed" if proc.returncode == 1 else "survived" if proc.returncode == 0 else f"error {proc.returncode}"
    return {"name": mutant.name, "result": result, "seconds": round(time.perf_counter() - started, 1),
            "what": mutant.what, "file": mutant.file, "tests": list(mutant.tests)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", help="mutant names to run (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "mutation.json")
    ns = parser.parse_args()
    chosen = [m for m in MUTANTS if not ns.only or m.name in ns.only]
    rows = [run_mutant(m) for m in chosen]
    print("| mutant | what it plants | result | s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['what']} | {r['result']} | {r['seconds']} |")
    killed = sum(r["result"] == "killed" for r in rows)
    print(f"mutation score: {killed} of {len(rows)} killed")
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps({"killed": killed, "total": len(rows), "mutants": rows}, indent=1) + "\n")
    sys.exit(0 if killed == len(rows) else 1)


if __name__ == "__main__":
    main()
