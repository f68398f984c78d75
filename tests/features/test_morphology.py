"""Morphology from masks against analytic shapes."""

from __future__ import annotations

import numpy as np
import pytest

from features import morphology
from features.morphology import lesion_components, max_feret_diameter_mm, patient_morphology, voxel_volume_ml


def voxelised_sphere(radius_mm: float, spacing_xyz: tuple[float, float, float], centre_offset=(0.3, 0.1, 0.2)):
    """A sphere sampled at voxel centres (z, y, x array)."""
    half = [int(np.ceil(radius_mm / sp)) + 2 for sp in spacing_xyz[::-1]]
    axes = [
        (np.arange(-h, h + 1) - off) * sp for h, sp, off in zip(half, spacing_xyz[::-1], centre_offset, strict=True)
    ]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return (x**2 + y**2 + z**2 <= radius_mm**2).astype(np.uint8)


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 2.5)])
def test_sphere_volume_and_diameter_match_the_analytic_values(spacing):
    radius = 15.0
    mask = voxelised_sphere(radius, spacing)
    (lesion,) = lesion_components(mask, (1,), spacing)
    analytic_ml = 4 / 3 * np.pi * radius**3 / 1000
    assert lesion.volume_ml == pytest.approx(analytic_ml, rel=0.02)
    # Centre-to-centre diameter: short of 2r by less than one voxel along the widest axis.
    assert 2 * radius - max(spacing) <= lesion.max_diameter_mm <= 2 * radius


def test_cube_diagonal_is_the_max_diameter():
    mask = np.zeros((12, 12, 12), np.uint8)
    mask[1:11, 1:11, 1:11] = 1
    assert max_feret_diameter_mm(mask, (1.0, 2.0, 3.0)) == pytest.approx(np.sqrt(9**2 + 18**2 + 27**2))


def test_separate_blobs_sharing_a_label_are_separate_lesions_sorted_by_size():
    mask = np.zeros((20, 20, 40), np.uint8)
    mask[2:6, 2:6, 2:6] = 2  # 64 voxels
    mask[2:8, 2:8, 20:28] = 2  # 288 voxels
    mask[10:12, 10:12, 10:12] = 3  # another lesion label
    lesions = lesion_components(mask, (2, 3), (1.0, 1.0, 1.0))
    assert [les.voxels for les in lesions] == [288, 64, 8]
    assert [les.label for les in lesions] == [2, 2, 3]


def test_diagonal_neighbours_are_one_lesion():
    mask = np.zeros((5, 5, 5), np.uint8)
    mask[1, 1, 1] = mask[2, 2, 2] = 1
    assert len(lesion_components(mask, (1,), (1.0, 1.0, 1.0))) == 1


def test_voxel_volume_is_in_millilitres():
    assert voxel_volume_ml((1.0, 1.0, 1.0)) == pytest.approx(0.001)
    assert voxel_volume_ml((10.0, 10.0, 10.0)) == pytest.approx(1.0)


def test_empty_mask_has_no_diameter():
    with pytest.raises(ValueError, match="empty"):
        max_feret_diameter_mm(np.zeros((3, 3, 3), bool), (1.0, 1.0, 1.0))


def two_spheres_in_a_liver_box(liver_label: int = 1, lesion_label: int = 2) -> tuple[np.ndarray, tuple]:
    """A 36 x 36 x 36 mm liver box holding spheres of radius 8 and 5 mm; spacing 1 x 1 x 2 mm."""
    spacing = (1.0, 1.0, 2.0)
    z, y, x = np.meshgrid(np.arange(20) * 2.0, np.arange(40) * 1.0, np.arange(40) * 1.0, indexing="ij")
    mask = np.zeros((20, 40, 40), np.uint8)
    mask[1:19, 2:38, 2:38] = liver_label
    for (cz, cy, cx), radius in (((19.3, 13.2, 14.1), 8.0), ((18.6, 27.7, 28.4), 5.0)):
        mask[(x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius**2] = lesion_label
    return mask, spacing


def test_patient_morphology_of_two_spheres_in_a_liver_box():
    mask, spacing = two_spheres_in_a_liver_box()
    result = patient_morphology(mask, spacing, liver_label=1, lesion_labels=(2,))
    assert set(result) == set(morphology.PATIENT_MORPHOLOGY_COLUMNS)
    sphere_ml = [4 / 3 * np.pi * r**3 / 1000 for r in (8.0, 5.0)]
    box_ml = 36 * 36 * 36 / 1000  # the whole organ: liver label plus tumours
    assert result[morphology.LESION_COUNT] == 2
    assert result[morphology.LARGEST_VOLUME_ML] == pytest.approx(sphere_ml[0], rel=0.03)
    assert result[morphology.TOTAL_TUMOUR_VOLUME_ML] == pytest.approx(sum(sphere_ml), rel=0.03)
    assert result[morphology.LIVER_VOLUME_ML] == pytest.approx(box_ml)
    assert result[morphology.TUMOUR_BURDEN_PERCENT] == pytest.approx(100 * sum(sphere_ml) / box_ml, rel=0.03)
    diameter = result[morphology.LARGEST_DIAMETER_MM]
    assert 16.0 - 2.0 <= diameter <= 16.0  # centre-to-centre: within one (largest) voxel of 2r
    # TBS = sqrt(1.6 cm^2 + 2^2) = 2.56 for the true diameter; the measured one is used.
    assert result[morphology.IMAGING_TBS] == pytest.approx(np.sqrt((diameter / 10) ** 2 + 2**2))
    assert np.hypot(1.4, 2) <= result[morphology.IMAGING_TBS] <= np.hypot(1.6, 2)


def test_patient_morphology_counts_further_lesion_labels_and_configured_labels():
    mask, spacing = two_spheres_in_a_liver_box(liver_label=3, lesion_label=5)
    mask[2:4, 5:7, 30:32] = 7  # a third lesion with another label
    result = patient_morphology(mask, spacing, liver_label=3, lesion_labels=(5, 7))
    assert result[morphology.LESION_COUNT] == 3
    assert result[morphology.LIVER_VOLUME_ML] == pytest.approx(36 * 36 * 36 / 1000)
    two = patient_morphology(mask, spacing, liver_label=3, lesion_labels=(5,))
    assert result[morphology.TOTAL_TUMOUR_VOLUME_ML] == pytest.approx(two[morphology.TOTAL_TUMOUR_VOLUME_ML] + 0.016)


def test_without_a_liver_label_liver_volume_and_burden_are_missing():
    mask, spacing = two_spheres_in_a_liver_box()
    mask[mask == 1] = 0
    result = patient_morphology(mask, spacing, liver_label=1, lesion_labels=(2,))
    assert np.isnan(result[morphology.LIVER_VOLUME_ML]) and np.isnan(result[morphology.TUMOUR_BURDEN_PERCENT])
    assert result[morphology.LESION_COUNT] == 2 and result[morphology.TOTAL_TUMOUR_VOLUME_ML] > 0
    assert np.isnan(patient_morphology(mask, spacing, None, (2,))[morphology.LIVER_VOLUME_ML])


def test_a_liver_without_lesions_has_zero_burden():
    mask, spacing = two_spheres_in_a_liver_box()
    mask[mask == 2] = 1
    result = patient_morphology(mask, spacing, liver_label=1, lesion_labels=())
    assert result[morphology.LESION_COUNT] == 0
    assert result[morphology.TUMOUR_BURDEN_PERCENT] == 0.0 and result[morphology.IMAGING_TBS] == 0.0


def test_a_shared_label_summary_gives_the_same_lesions_as_labelling_the_whole_volume():
    """Components inside the lesions' box, computed once (issue 14), number and measure the
    lesions exactly as labelling the whole volume did: same order, centroids, diameters."""
    from scipy import ndimage

    from features import radiomics

    rng = np.random.default_rng(3)
    mask = np.zeros((30, 60, 70), np.uint8)
    mask[2:28, 5:55, 4:66] = 1  # liver
    blobs = ndimage.binary_opening(rng.random((12, 20, 24)) > 0.55)
    mask[10:22, 20:40, 30:54][blobs] = 2  # many small lesions of label 2
    mask[5:8, 8:11, 8:11] = 4  # a lesion of another label
    summary = morphology.summarize_labels(mask, liver_label=1)
    assert summary.lesion_labels == (2, 4) and summary.counts[1] == int((mask == 1).sum())
    spacing = (0.8, 0.7, 2.5)
    shared = lesion_components(mask, (2, 4), spacing, summary=summary)
    assert shared == lesion_components(mask, (2, 4), spacing) and len(shared) > 3
    expected, order = [], []  # labelling the whole volume, as before issue 14
    for label in (2, 4):
        full, _ = ndimage.label(mask == label, structure=morphology.FULL_CONNECTIVITY)
        for index, box in enumerate(ndimage.find_objects(full), start=1):
            local = full[box] == index
            centre = ndimage.center_of_mass(local)
            expected.append(
                morphology.Lesion(
                    label,
                    int(local.sum()),
                    int(local.sum()) * morphology.voxel_volume_ml(spacing),
                    max_feret_diameter_mm(local, spacing),
                    tuple(float(c + s.start) for c, s in zip(centre, box, strict=True)),
                )
            )
            order.append((-int(local.sum()), int(np.flatnonzero((full == index).ravel())[0]), label, full == index))
    expected.sort(key=lambda les: (-les.voxels, les.centroid_zyx))
    assert shared == expected
    by_box = radiomics.number_lesions(mask, (2, 4), summary=summary)
    whole = np.zeros(mask.shape, np.int32)
    whole[by_box.box] = by_box.numbered
    order.sort(key=lambda item: item[:2])
    for number, (_, _, label, voxels) in enumerate(order, start=1):
        assert by_box.labels[number - 1] == label and np.array_equal(whole == number, voxels)
    numbered, labels = radiomics.label_lesions(mask, (2, 4))
    np.testing.assert_array_equal(whole, numbered)
    assert by_box.labels == labels
    assert patient_morphology(mask, spacing, 1, (2, 4), summary=summary) == patient_morphology(mask, spacing, 1, (2, 4))
