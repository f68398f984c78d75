"""Image and mask perturbations (features/perturbation.py) and their place in the extraction."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from features import extraction, imaging, radiomics
from features import perturbation as P
from features.morphology import summarize_labels
from features.schema import PERTURBATION_FAILED
from features.settings import SettingsError, build, load
from tests.conftest import LIGHT_RADIOMICS, REPO

LABELS = imaging.LabelRoles(liver=1, lesion=2)
SPACING = (1.0, 1.0, 2.0)


def _case(radii=(6.0,), shape=(24, 48, 48), seed=0) -> imaging.Case:
    """A liver block (label 1, ~60 HU + noise) holding spherical lesions (label 2, ~30 HU)."""
    z, y, x = np.indices(shape)
    mask = np.zeros(shape, np.uint8)
    mask[2:-2, 4:-4, 4:-4] = 1
    centres = [(12, 24, 16), (12, 24, 36)]
    for radius, (cz, cy, cx) in zip(radii, centres, strict=False):
        inside = ((z - cz) * SPACING[2]) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= radius**2
        mask[inside] = 2
    rng = np.random.default_rng(seed)
    values = np.where(mask == 2, 30.0, np.where(mask == 1, 60.0, -100.0)) + rng.normal(0, 5, shape)
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing(SPACING)
    label_map = sitk.GetImageFromArray(mask)
    label_map.CopyInformation(image)
    return imaging.Case("p1", image, label_map, label_summary=summarize_labels(mask, LABELS.liver))


def _array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(image)


def test_same_seed_same_images_other_seed_other_images():
    case = _case()
    drawn = P.draw_perturbations(P.RobustnessConfig(), "icc", 2, seed=1)
    assert drawn == P.draw_perturbations(P.RobustnessConfig(), "icc", 2, seed=1)
    first = P.apply_perturbation(case, drawn[0], LABELS, salt="abc")
    again = P.apply_perturbation(case, drawn[0], LABELS, salt="abc")
    np.testing.assert_array_equal(_array(first.image), _array(again.image))
    np.testing.assert_array_equal(_array(first.mask), _array(again.mask))
    other = P.apply_perturbation(case, dataclasses.replace(drawn[0], seed=drawn[0].seed + 1), LABELS, salt="abc")
    assert not np.array_equal(_array(first.image), _array(other.image))


def test_noise_has_the_requested_standard_deviation():
    case = _case()
    noisy = P.add_noise(case.image, 12.0, np.random.default_rng(0))
    difference = _array(noisy).astype(float) - _array(case.image)
    assert abs(difference.std() - 12.0) < 0.2  # 55,296 voxels: sd of the sd ~ 0.04
    assert abs(difference.mean()) < 0.2


def test_rotation_and_translation_by_zero_are_the_identity():
    case = _case()
    image, mask = P.rotate_translate(case.image, case.mask, 0.0, (0.0, 0.0, 0.0))
    np.testing.assert_array_equal(_array(image), _array(case.image))
    np.testing.assert_array_equal(_array(mask), _array(case.mask))
    # the same through SimpleITK's resampling: a rotation of 360 degrees lands on the same grid
    image, mask = P.rotate_translate(case.image, case.mask, 360.0, (0.0, 0.0, 0.0))
    np.testing.assert_allclose(_array(image), _array(case.image), atol=1e-3)
    np.testing.assert_array_equal(_array(mask), _array(case.mask))


def test_translation_by_one_voxel_shifts_the_content():
    case = _case()
    image, mask = P.rotate_translate(case.image, case.mask, 0.0, (1.0, 0.0, 0.0))
    np.testing.assert_allclose(_array(image)[:, :, 1:], _array(case.image)[:, :, :-1], atol=1e-3)
    np.testing.assert_array_equal(_array(mask)[:, :, 1:], _array(case.mask)[:, :, :-1])


def test_rotation_by_90_degrees_turns_the_lesions_about_z():
    case = _case(radii=(6.0, 5.0), shape=(24, 49, 49))
    _, mask = P.rotate_translate(case.image, case.mask, 90.0, (0.0, 0.0, 0.0))
    # +90 degrees turns the content from +x towards +y (numpy's z, y, x axes: rot90 from x to y)
    np.testing.assert_array_equal(_array(mask) == 2, np.rot90(_array(case.mask) == 2, k=-1, axes=(1, 2)))


@pytest.mark.parametrize("fraction", [-0.1, 0.1, 0.25])
def test_volume_adaptation_changes_lesion_volume_by_the_fraction(fraction):
    case = _case()
    before = _array(case.mask)
    after = _array(P.adapt_volume(case.mask, fraction, LABELS.liver))
    lesion_before, lesion_after = int((before == 2).sum()), int((after == 2).sum())
    target = lesion_before * (1 + fraction)
    from scipy import ndimage

    lesion = before == 2
    shell = int((lesion & ~ndimage.binary_erosion(lesion)).sum())  # one voxel shell of the lesion
    assert abs(lesion_after - target) <= shell
    assert abs(lesion_after - target) / lesion_before < 0.03
    # the liver changes only where a lesion grew into it (or gets the voxels a lesion gave up)
    changed = before != after
    assert set(np.unique(before[changed])) <= {1, 2} and set(np.unique(after[changed])) <= {1, 2}
    assert ((before == 0) == (after == 0)).all()


def test_contour_randomisation_moves_the_boundary_only():
    case = _case()
    before = _array(case.mask) == 2
    after = _array(P.adapt_volume(case.mask, 0.0, LABELS.liver, 1.0, 3.0, np.random.default_rng(3))) == 2
    changed = before ^ after
    assert changed.any()
    assert abs(int(after.sum()) - int(before.sum())) <= 1  # volume kept (threshold at the same count)
    from scipy import ndimage

    core = ndimage.binary_erosion(before, iterations=3)
    assert not (changed & core).any()  # the boundary moves by about the amplitude, never the core


def test_hu_offset_and_contrast_scaling_are_exact():
    case = _case()
    scaled = P.scale_contrast(case.image, 0.8, 50.0, 7.0)
    expected = 50.0 + 0.8 * (_array(case.image).astype(float) - 50.0) + 7.0
    np.testing.assert_allclose(_array(scaled), expected, rtol=0, atol=1e-4)
    assert _array(scaled).dtype == np.float32


def test_thicker_slices_give_the_new_spacing():
    case = _case()
    image, mask = P.thicken_slices(case.image, case.mask, 1.5)
    assert image.GetSpacing() == pytest.approx((1.0, 1.0, 3.0))
    assert mask.GetSpacing() == image.GetSpacing() and mask.GetSize() == image.GetSize()
    assert image.GetSize()[2] == 16  # (24 - 1) * 2 / 3 + 1


def test_site_chain_is_an_exact_contrast_change_without_noise_or_slices():
    case = _case()
    site = P.Perturbation("site", 1, 5, hu_offset=-4.0, contrast_scale=1.1, contrast_centre_hu=50.0)
    perturbed = P.apply_perturbation(case, site, LABELS)
    expected = 50.0 + 1.1 * (_array(case.image).astype(float) - 50.0) - 4.0
    np.testing.assert_allclose(_array(perturbed.image), expected, atol=1e-4)
    np.testing.assert_array_equal(_array(perturbed.mask), _array(case.mask))


def test_a_lesion_that_vanishes_gives_the_case_a_status():
    case = _case(radii=(6.0, 1.0))  # the second lesion is a single voxel row
    shrink = P.Perturbation("icc", 1, 0, volume_fraction=-0.5)
    with pytest.raises(imaging.CaseError) as error:
        P.apply_perturbation(case, shrink, LABELS, min_lesion_voxels=2)
    assert error.value.reason == PERTURBATION_FAILED
    assert "icc-1" in str(error.value) and "p1" in str(error.value)


def test_config_is_validated_with_did_you_mean():
    assert load(P.RobustnessConfig, REPO / "configs" / "robustness.yaml") == P.RobustnessConfig()
    with pytest.raises(SettingsError, match="did you mean 'noise_sd_hu'"):
        build(P.RobustnessConfig, {"icc": {"noise_sd": [1.0, 2.0]}}, "robustness.yaml")
    with pytest.raises(SettingsError, match="must not exceed"):
        build(P.RobustnessConfig, {"site": {"hu_offset": [5.0, -5.0]}}, "robustness.yaml")


def test_record_round_trips_and_digest_is_stable():
    drawn = P.draw_perturbations(P.RobustnessConfig(), "site", 1, seed=3)[0]
    assert P.Perturbation.from_record(drawn.record()) == drawn
    assert drawn.digest() == P.Perturbation.from_record(drawn.record()).digest()
    assert drawn.name == "site-1"
    # an icc perturbation has no blur: its record (and cache key) is what it was before blur existed
    icc = P.draw_perturbations(P.RobustnessConfig(), "icc", 1, seed=3)[0]
    assert "blur_sigma_mm" not in icc.record() and P.Perturbation.from_record(icc.record()) == icc


def test_simulated_scanners_span_every_range_one_per_stratum():
    """A Latin hypercube: with S scanners each factor's range is cut into S equal strata and each
    stratum holds exactly one scanner, for any seed (independent draws put all three of the
    default seed's scanners above 1.1 in contrast and below 0 HU in offset)."""
    config = P.RobustnessConfig()
    for seed, count in ((13, 3), (7, 3), (13, 5), (2, 1)):
        scanners = P.draw_perturbations(config, "site", count, seed=seed)
        assert [p.name for p in scanners] == [f"site-{k}" for k in range(1, count + 1)]
        for field in P.SITE_FACTORS:
            low, high = getattr(config.site, field)
            values = np.array([getattr(p, field) for p in scanners])
            assert ((low <= values) & (values <= high)).all(), (field, values)
            strata = np.floor((values - low) / (high - low) * count - 1e-9).clip(0, count - 1)
            assert sorted(strata) == list(range(count)), (seed, field, values)
        assert P.draw_perturbations(config, "site", count, seed=seed) == scanners  # same seed, same scanners
        assert all(p.rotation_deg == 0 and p.volume_fraction == 0 for p in scanners)  # the reader does not change
    contrasts = [p.contrast_scale for p in P.draw_perturbations(config, "site", 3, seed=13)]
    assert min(contrasts) < 0.8 + 0.4 / 3 and max(contrasts) > 1.2 - 0.4 / 3, contrasts


def test_blur_is_a_gaussian_of_the_given_width_in_mm():
    """A point source blurred with sigma 2 mm on a 1 x 1 x 2 mm grid has variance 4 mm^2 along
    every axis (the analytic Gaussian; sampled, within 2%), and keeps its total."""
    values = np.zeros((21, 41, 41), np.float32)
    values[10, 20, 20] = 1000.0
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((1.0, 1.0, 2.0))
    out = sitk.GetArrayFromImage(P.blur(image, 2.0)).astype(np.float64)
    assert out.sum() == pytest.approx(1000.0, rel=1e-3)
    for axis, spacing in [(0, 2.0), (1, 1.0), (2, 1.0)]:
        profile = out.sum(axis=tuple(a for a in range(3) if a != axis))
        position = (np.arange(profile.size) - profile.size // 2) * spacing
        variance = float((profile * position**2).sum() / profile.sum())
        assert variance == pytest.approx(4.0, rel=0.02), (axis, variance)
    assert P.blur(image, 0.0) is image


# ----------------------------------------------------------------------------- CaseOptions


def _options(**kwargs) -> extraction.CaseOptions:
    return extraction.CaseOptions(settings=radiomics.ExtractionSettings(LIGHT_RADIOMICS, 25.0), labels=LABELS, **kwargs)


def test_default_case_options_keep_their_digest_and_record():
    # computed on main before CaseOptions.perturbation existed: default extractions keep their cache
    options = _options()
    assert options.digest() == "81ef3c9d9074d3cd"
    record = extraction.settings_record(options)
    assert "perturbation" not in record
    assert set(record) == {
        "settings_hash",
        "radiomics",
        "crop_margin_mm",
        "labels",
        "resample_mask",
        "min_lesion_voxels",
        "require_hu",
        "versions",
    }


def test_perturbation_is_part_of_digest_and_record():
    drawn = P.draw_perturbations(P.RobustnessConfig(), "icc", 2, seed=3)
    first, second = _options(perturbation=drawn[0]), _options(perturbation=drawn[1])
    assert len({_options().digest(), first.digest(), second.digest()}) == 3
    record = extraction.settings_record(first)
    assert record["perturbation"]["chain"] == "icc"
    assert extraction.options_from_record(record) == first
    assert extraction.options_from_record(extraction.settings_record(_options())).perturbation is None
