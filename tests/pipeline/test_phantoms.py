"""CT phantoms: geometry, agreement with the clinical table, visible traits, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy import ndimage

from features import schema as s
from features.morphology import lesion_components
from pipeline import cohort, phantoms, synthesis


@pytest.fixture(scope="module")
def cohort_a(tmp_path_factory, world, labels) -> Path:
    out = tmp_path_factory.mktemp("site_a")
    cohort.write_cohort(out, n=8, seed=3, site="A", world=world, labels=labels, jobs=2, progress=False)
    return out


@pytest.fixture(scope="module")
def cohort_b(synthetic_cohort) -> Path:
    """Site B: the shared cohort of tests/conftest.py (read-only)."""
    return synthetic_cohort


def read(folder: Path, relative: str) -> tuple[sitk.Image, np.ndarray]:
    image = sitk.ReadImage(str(folder / relative))
    return image, sitk.GetArrayFromImage(image)


def test_lesion_count_and_largest_diameter_match_the_table(cohort_a, cohort_b, labels):
    for folder in (cohort_a, cohort_b):
        table = pd.read_csv(folder / cohort.CLINICAL_FILE)
        for row in table.itertuples():
            mask_image, mask = read(folder, row.mask)
            spacing = mask_image.GetSpacing()
            lesions = lesion_components(mask, (labels.lesion,), spacing)
            assert len(lesions) == row.n_liver_lesions, row.patient_id
            measured_mm = lesions[0].max_diameter_mm
            assert abs(measured_mm - 10 * row.largest_lesion_cm) <= max(spacing), (
                f"{row.patient_id}: measured {measured_mm:.1f} mm, table {row.largest_lesion_cm} cm"
            )


def test_images_and_masks_share_geometry_and_are_ct_like(cohort_a, labels):
    table = pd.read_csv(cohort_a / cohort.CLINICAL_FILE)
    for row in table.itertuples():
        image, ct = read(cohort_a, row.image)
        mask_image, mask = read(cohort_a, row.mask)
        assert image.GetPixelID() == sitk.sitkInt16
        assert mask_image.GetPixelID() == sitk.sitkUInt8
        assert image.GetSize() == mask_image.GetSize()
        assert np.allclose(image.GetSpacing(), mask_image.GetSpacing())
        assert np.allclose(image.GetOrigin(), mask_image.GetOrigin())
        assert np.allclose(image.GetDirection(), mask_image.GetDirection())
        assert set(np.unique(mask)) == {0, labels.liver, labels.lesion}
        # Anatomy in CT numbers: air outside, enhanced liver, hypo-attenuating lesions.
        assert ct.min() <= -990
        liver = np.median(ct[mask == labels.liver])
        lesion = np.median(ct[mask == labels.lesion])
        assert 80 <= liver <= 130
        assert lesion < liver - 20


def test_clinical_table_has_the_canonical_columns_and_relative_paths(cohort_a):
    table = pd.read_csv(cohort_a / cohort.CLINICAL_FILE)
    expected = [c.name for c in s.COLUMNS if c.name not in s.STAND_IN_INPUTS]
    assert table.columns.tolist() == expected
    for row in table.itertuples():
        assert (cohort_a / row.image).is_file() and (cohort_a / row.mask).is_file()
        assert not Path(row.image).is_absolute()
    truth = pd.read_csv(cohort_a / cohort.TRUTH_FILE)
    assert truth[s.PATIENT_ID].tolist() == table[s.PATIENT_ID].tolist()
    lesions = pd.read_csv(cohort_a / cohort.TRUTH_LESIONS_FILE)
    assert lesions.groupby(s.PATIENT_ID).size().reindex(table[s.PATIENT_ID]).tolist() == table[s.N_LESIONS].tolist()


def test_sites_use_their_own_scanner_grid(cohort_a, cohort_b, world):
    image_a, _ = read(cohort_a, pd.read_csv(cohort_a / cohort.CLINICAL_FILE).image[0])
    image_b, _ = read(cohort_b, pd.read_csv(cohort_b / cohort.CLINICAL_FILE).image[0])
    assert image_a.GetSpacing() == pytest.approx(world.site("A").spacing_mm)
    assert image_b.GetSpacing() == pytest.approx(world.site("B").spacing_mm)
    assert image_a.GetSpacing() != image_b.GetSpacing()


def _render(world, labels, site="A", **traits) -> phantoms.Phantom:
    base = dict(heterogeneity=0.0, irregularity=0.0, rim=0.0, necrosis=0.05)
    base.update(traits)
    return phantoms.render_phantom(
        n_lesions=1,
        largest_cm=5.0,
        bilobar=False,
        traits=phantoms.LesionTraits(**base),
        phantom=world.phantom,
        site=world.site(site),
        unenhanced=world.unenhanced_hu,
        trait_params=world.traits,
        labels=labels,
        seed=np.random.SeedSequence(99),
    )


def _lesion(phantom: phantoms.Phantom, labels) -> tuple[np.ndarray, np.ndarray]:
    ct = sitk.GetArrayFromImage(phantom.image).astype(float)
    mask = sitk.GetArrayFromImage(phantom.mask) == labels.lesion
    return ct, mask


def test_heterogeneity_raises_intensity_variance_inside_the_lesion(world, labels):
    low_ct, low_mask = _lesion(_render(world, labels, heterogeneity=-1.5), labels)
    high_ct, high_mask = _lesion(_render(world, labels, heterogeneity=1.5), labels)
    low_core = ndimage.binary_erosion(low_mask, iterations=2)
    high_core = ndimage.binary_erosion(high_mask, iterations=2)
    assert high_ct[high_core].var() > 2.0 * low_ct[low_core].var()


def test_irregular_margins_make_a_less_compact_lesion(world, labels):
    def compactness(phantom):
        mask = sitk.GetArrayFromImage(phantom.mask) == labels.lesion
        spacing = phantom.image.GetSpacing()
        volume = mask.sum() * np.prod(spacing)
        diameter = lesion_components(mask.astype(np.uint8), (1,), spacing)[0].max_diameter_mm
        return volume / (np.pi / 6 * diameter**3)  # 1 for a sphere

    assert (
        compactness(_render(world, labels, irregularity=2.0))
        < compactness(_render(world, labels, irregularity=-2.0)) - 0.1
    )


def test_rim_enhancement_brightens_the_lesion_edge(world, labels):
    def edge_minus_core(phantom):
        ct, mask = _lesion(phantom, labels)
        inner = ndimage.binary_erosion(mask, iterations=1)
        shell = inner & ~ndimage.binary_erosion(inner, iterations=1)
        core = ndimage.binary_erosion(mask, iterations=4)
        return ct[shell].mean() - ct[core].mean()

    assert edge_minus_core(_render(world, labels, rim=2.0)) > edge_minus_core(_render(world, labels, rim=-2.0)) + 15


def test_necrosis_darkens_the_lesion_core(world, labels):
    ct_low, mask_low = _lesion(_render(world, labels, necrosis=0.05), labels)
    ct_high, mask_high = _lesion(_render(world, labels, necrosis=0.6), labels)
    assert np.median(ct_high[mask_high]) < np.median(ct_low[mask_low]) - 15


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_the_same_bytes_and_another_seed_other_images(tmp_path, world, labels):
    for name, seed, jobs in (("first", 21, 1), ("again", 21, 2), ("other", 22, 1)):
        cohort.write_cohort(
            tmp_path / name, n=2, seed=seed, site="B", world=world, labels=labels, jobs=jobs, progress=False
        )
    first, again, other = (_digest(tmp_path / n) for n in ("first", "again", "other"))
    assert first == again
    assert set(first.values()).isdisjoint(other.values())


def test_a_folder_with_foreign_files_is_not_overwritten(tmp_path, world, labels):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="notes.txt"):
        cohort.write_cohort(tmp_path, n=1, seed=1, site="A", world=world, labels=labels, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_a_previous_cohort_is_replaced_not_mixed(tmp_path, world, labels):
    cohort.write_cohort(tmp_path, n=3, seed=1, site="B", world=world, labels=labels, progress=False)
    cohort.write_cohort(tmp_path, n=1, seed=1, site="B", world=world, labels=labels, progress=False)
    assert len(list((tmp_path / cohort.IMAGES_DIR).iterdir())) == 1
    assert len(pd.read_csv(tmp_path / cohort.CLINICAL_FILE)) == 1


def test_bilobar_patients_have_lesions_on_both_sides_of_the_lobe_boundary(world, labels):
    phantom = phantoms.render_phantom(
        n_lesions=4,
        largest_cm=3.0,
        bilobar=True,
        traits=phantoms.LesionTraits(0.0, 0.0, 0.0, 0.2),
        phantom=world.phantom,
        site=world.site("A"),
        unenhanced=world.unenhanced_hu,
        trait_params=world.traits,
        labels=labels,
        seed=np.random.SeedSequence(5),
    )
    boundary = world.phantom.lobe_boundary_x_mm
    xs = [lesion.centre_mm[0] for lesion in phantom.lesions]
    assert min(xs) < boundary < max(xs)
    with pytest.raises(ValueError, match="bilobar disease needs at least two lesions"):
        phantoms.render_phantom(
            n_lesions=1,
            largest_cm=3.0,
            bilobar=True,
            traits=phantoms.LesionTraits(0, 0, 0, 0.2),
            phantom=world.phantom,
            site=world.site("A"),
            unenhanced=world.unenhanced_hu,
            trait_params=world.traits,
            labels=labels,
            seed=np.random.SeedSequence(5),
        )


def test_clinical_only_cohort_matches_the_imaged_cohort_tables(tmp_path, world, labels):
    cohort.write_cohort(
        tmp_path / "tables", n=2, seed=4, site="A", world=world, labels=labels, images=False, progress=False
    )
    cohort.write_cohort(tmp_path / "images", n=2, seed=4, site="A", world=world, labels=labels, progress=False)
    tables = pd.read_csv(tmp_path / "tables" / cohort.CLINICAL_FILE).drop(columns=[s.IMAGE, s.MASK])
    imaged = pd.read_csv(tmp_path / "images" / cohort.CLINICAL_FILE).drop(columns=[s.IMAGE, s.MASK])
    pd.testing.assert_frame_equal(tables, imaged)
    assert not (tmp_path / "tables" / cohort.IMAGES_DIR).exists()
    assert synthesis.TRUTH_RECURRENCE_LP in pd.read_csv(tmp_path / "tables" / cohort.TRUTH_FILE)


# The fast paths of the renderer must draw the same voxels as the direct computation they
# replace (issue 14: phantoms faster with byte-identical output). The references below are the
# direct computations, kept here as the specification.


def _reference_liver_surface(q: np.ndarray, amplitude: float, field) -> np.ndarray:
    """Every voxel of the box tested with the field evaluated at its own direction."""
    rho = np.linalg.norm(q, axis=-1)
    reach = amplitude * np.sqrt(2.0 * len(field.frequencies))
    shell = np.abs(rho - 1.0) <= reach
    inside = rho < 1.0 - reach
    inside[shell] = rho[shell] <= 1.0 + amplitude * field(q[shell] / rho[shell][:, None])
    return inside


@pytest.mark.parametrize("seed, amplitude", [(0, 0.06), (1, 0.06), (2, 0.15), (3, 0.02), (4, 0.3)])
def test_perturbed_surface_from_anchors_is_the_direct_evaluation(seed, amplitude):
    rng = np.random.default_rng(seed)
    field = phantoms._plane_wave_field(rng, 6)
    semi = np.array([85.0, 70.0, 75.0])
    axes = [np.arange(-120.0, 120.0, 1.5), np.arange(-100.0, 100.0, 1.7), np.arange(-100.0, 100.0, 3.0)]
    qx = (axes[0] / semi[0])[None, None, :]
    qy = (axes[1] / semi[1])[None, :, None]
    qz = (axes[2] / semi[2])[:, None, None]
    zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    expected = _reference_liver_surface(np.stack([xx, yy, zz], axis=-1) / semi, amplitude, field)
    rho = np.sqrt(qx * qx + qy * qy + qz * qz)
    reach = amplitude * np.sqrt(2.0 * len(field.frequencies))
    shell = np.abs(rho - 1.0) <= reach
    fast = rho < 1.0 - reach
    fast[shell] = phantoms._inside_perturbed_surface((qx.ravel(), qy.ravel(), qz.ravel()), rho, shell, amplitude, field)
    assert np.array_equal(fast, expected)


def test_plane_wave_gradient_and_curvature_bound_hold():
    rng = np.random.default_rng(11)
    field = phantoms._plane_wave_field(rng, 6)
    u = rng.standard_normal((500, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    value, gradient = field.value_and_gradient(u)
    np.testing.assert_array_equal(value, field(u))
    h = 1e-6
    for k in range(3):
        step = np.zeros(3)
        step[k] = h
        numeric = (field(u + step) - field(u - step)) / (2 * h)
        np.testing.assert_allclose(gradient[:, k], numeric, rtol=1e-5, atol=1e-5)
    for scale in (1e-3, 0.05, 0.3):
        v = u + scale * rng.standard_normal(u.shape)
        d = v - u
        remainder = np.abs(field(v) - value - (gradient * d).sum(axis=1))
        assert np.all(remainder <= 0.5 * field.curvature * (d * d).sum(axis=1) + 1e-12)


def test_vessel_segments_tested_in_their_box_are_the_whole_grid_test():
    rng = np.random.default_rng(3)
    axes = (np.arange(-60.0, 60.0, 1.5), np.arange(-50.0, 50.0, 1.25), np.arange(-40.0, 40.0, 3.0))
    zz, yy, xx = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    points = np.stack([xx, yy, zz], axis=-1)
    for _ in range(5):
        start, end = rng.uniform(-45, 45, 3), rng.uniform(-45, 45, 3)
        radius = rng.uniform(2.0, 8.0)
        direction = end - start
        t = np.clip(((points - start) @ direction) / (direction @ direction), 0.0, 1.0)
        expected = np.sum((points - (start + t[..., None] * direction)) ** 2, axis=-1) <= radius**2
        box, tube = phantoms._tube(axes, start, end, radius)
        got = np.zeros(zz.shape, dtype=bool)
        got[box] = tube
        assert np.array_equal(got, expected)


def _reference_lesion_mask(radius: float, amplitude: float, field, spacing_zyx: np.ndarray) -> np.ndarray:
    """One iteration of the lesion shape with the field evaluated at every voxel of the box."""
    reach = radius * (1.0 + 4.0 * amplitude) + spacing_zyx.max()
    half = np.ceil(reach / spacing_zyx).astype(int) + 1
    z, y, x = np.meshgrid(*[np.arange(-h, h + 1) * sp for h, sp in zip(half, spacing_zyx, strict=True)], indexing="ij")
    rho = np.sqrt(x * x + y * y + z * z)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = np.stack([x, y, z], axis=-1) / rho[..., None]
    unit[rho == 0] = (1.0, 0.0, 0.0)
    return rho <= radius * np.maximum(1.0 + amplitude * field(unit), phantoms._MIN_RADIAL_FACTOR)


@pytest.mark.parametrize(
    "seed, amplitude, diameter", [(0, 0.0, 20.0), (1, 0.05, 33.0), (2, 0.28, 12.0), (3, 0.4, 50.0)]
)
def test_lesion_shape_evaluates_the_field_only_where_it_matters(seed, amplitude, diameter):
    field = phantoms._plane_wave_field(np.random.default_rng(seed), 6)
    spacing = np.array([3.0, 1.5, 1.5])
    shape = phantoms._lesion_shape(diameter, amplitude, field, spacing)
    # _lesion_shape rescales its radius; the reference must reach a mask of the same box.
    radius = diameter / 2.0
    for _ in range(phantoms._SHAPE_ITERATIONS):
        expected = _reference_lesion_mask(radius, amplitude, field, spacing)
        if expected.shape == shape.shape and np.array_equal(expected, shape):
            break
        from features.morphology import max_feret_diameter_mm

        measured = max_feret_diameter_mm(expected, tuple(spacing[::-1]))
        if measured == 0:
            break
        radius *= diameter / measured
    assert expected.shape == shape.shape and np.array_equal(expected, shape)
