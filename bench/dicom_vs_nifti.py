"""Per-case cost of the DICOM path (series folder + DICOM-SEG) against the NIfTI path, and of
``crlm validate --images`` from headers (issue 11).

    python bench/dicom_vs_nifti.py [--case STS_001] [--repeats 3] [--validate-patients 200]

Takes a real CT of tests/data/real_ct (uncropped; STS_001 is 198 x 202 x 59 voxels with a
117,000-voxel tumour) and writes it twice in a temporary folder: as NIfTI (CT and label map)
and as a DICOM series (int16, one file per slice) with a highdicom BINARY SEG in TCIA's
layout (Liver, Liver_Remnant, Hepatic, Portal, Tumor_1, Tumor_2; tests/features/real_dicom.py).
Then, best of ``--repeats``, one SimpleITK thread (as extraction workers):

- ``read``: `features.imaging.load_case` (image, mask on the image grid, every check);
- ``extract``: `features.extraction.extract_case` without cache, configs/radiomics.yaml and
  crop_margin_mm of configs/extraction.yaml (reading + morphology + 1130 features per lesion);
- ``validate``: `pipeline.validate.check_images` over ``--validate-patients`` rows that all
  point at the DICOM case (headers only; the files are in the page cache after the first row),
  with 1 and 2 worker processes, then the same rows pointing at the NIfTI files.

Prints seconds and DICOM / NIfTI ratios (target: within 1.5x per case). A benchmark, not a
test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _best(call, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="STS_001", help="folder of tests/data/real_ct")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--validate-patients", type=int, default=200)
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    import SimpleITK as sitk
    import yaml
    from pydicom.uid import generate_uid

    from features import extraction, imaging, radiomics
    from features.schema import IMAGE, MASK, PATIENT_ID
    from pipeline.validate import check_images
    from tests.features import real_dicom as rd

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    source = REPO / "tests" / "data" / "real_ct" / args.case
    image = sitk.ReadImage(str(source / "CT_image.nii.gz"))
    ct = sitk.GetArrayFromImage(image).astype(np.int16)
    tumour = sitk.GetArrayFromImage(sitk.ReadImage(str(source / "CT_mask.nii.gz"))) > 0
    spacing, origin = (0.9765625, 0.9765625, 3.25), tuple(round(v * 4) / 4 for v in image.GetOrigin())
    stack = rd.segment_stack(tumour)
    labels = imaging.LabelRoles(1, 2, {"Liver": "liver", "Tumor_*": "lesion"})
    params = radiomics.load_radiomics_params(REPO / "configs" / "radiomics.yaml")
    margin = float(yaml.safe_load((REPO / "configs" / "extraction.yaml").read_text())["crop_margin_mm"])
    options = extraction.CaseOptions(radiomics.ExtractionSettings(params, margin), labels)

    with tempfile.TemporaryDirectory(prefix="crlm-dicom-bench-") as tmp:
        root = Path(tmp)
        sources = rd.write_series(ct, spacing, origin, root / "ct", study_uid=generate_uid(), frame_uid=generate_uid())
        seg = rd.write_seg(sources, stack, root / "seg" / "seg.dcm")
        nifti_image = sitk.GetImageFromArray(ct)
        nifti_image.SetSpacing(spacing)
        nifti_image.SetOrigin(origin)
        sitk.WriteImage(nifti_image, str(root / "ct.nii.gz"))
        nifti_mask = sitk.GetImageFromArray(rd.label_map(stack))
        nifti_mask.CopyInformation(nifti_image)
        sitk.WriteImage(nifti_mask, str(root / "mask.nii.gz"))
        paths = {"nifti": (root / "ct.nii.gz", root / "mask.nii.gz"), "dicom": (root / "ct", seg)}

        print(
            f"case {args.case}: {ct.shape[2]} x {ct.shape[1]} x {ct.shape[0]} voxels, "
            f"{len(sources)} DICOM files, SEG {seg.stat().st_size / 1e6:.1f} MB; best of {args.repeats}"
        )
        seconds: dict[tuple[str, str], float] = {}
        for path_kind, (image_path, mask_path) in paths.items():
            seconds["read", path_kind] = _best(
                lambda i=image_path, m=mask_path: imaging.load_case("P", i, m, labels), args.repeats
            )
            case = extraction.CaseInput("P", image_path, mask_path)
            seconds["extract", path_kind] = _best(
                lambda c=case: extraction.extract_case(c, options, None), args.repeats
            )
        for step in ("read", "extract"):
            nifti, dicom = seconds[step, "nifti"], seconds[step, "dicom"]
            print(f"{step:8s} nifti {nifti:7.3f} s   dicom {dicom:7.3f} s   dicom/nifti {dicom / nifti:5.2f}x")

        n = args.validate_patients
        table = pd.DataFrame(
            {PATIENT_ID: [f"P{i:04d}" for i in range(n)], IMAGE: [str(root / "ct")] * n, MASK: [str(seg)] * n}
        )
        for jobs in (1, 2):
            start = time.perf_counter()
            statuses = check_images(table, root, labels, jobs=jobs)
            elapsed = time.perf_counter() - start
            print(
                f"validate {n} DICOM patients from headers, jobs={jobs}: {elapsed:.2f} s "
                f"({elapsed / n * 1000:.1f} ms per patient, {len(sources)} slice headers + SEG header each); "
                f"statuses {statuses['status'].value_counts().to_dict()}"
            )
        table[IMAGE], table[MASK] = str(paths["nifti"][0]), str(paths["nifti"][1])
        start = time.perf_counter()
        statuses = check_images(table, root, labels)
        elapsed = time.perf_counter() - start
        print(
            f"validate {n} NIfTI patients from headers: {elapsed:.2f} s ({elapsed / n * 1000:.1f} ms per patient); "
            f"statuses {statuses['status'].value_counts().to_dict()}"
        )


if __name__ == "__main__":
    main()
