"""Morphology from masks against analytic shapes."""

from __future__ import annotations

import numpy as np
import pytest

from features.morphology import lesion_components, max_feret_diameter_mm, voxel_volume_ml


def voxelised_sphere(radius_mm: float, spacing_xyz: tuple[float, float, float], centre_offset=(0.3, 0.1, 0.2)):
    """A sphere sampled at voxel centres (z, y, x array)."""
    half = [int(np.ceil(radius_mm / sp)) + 2 for sp in spacing_xyz[::-1]]
    axes = [(np.arange(-h, h + 1) - off) * sp for h, sp, off in zip(half, spacing_xyz[::-1], centre_offset)]
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
    mask[2:6, 2:6, 2:6] = 2        # 64 voxels
    mask[2:8, 2:8, 20:28] = 2      # 288 voxels
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
