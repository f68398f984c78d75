"""CT phantoms of the synthetic cohort: body, liver, vessels and lesions, with label masks.

One patient's phantom is drawn from its own random stream, so it is the same whichever
worker renders it. Geometry follows ITK: LPS axes in mm (x to the patient's left, y
posterior, z superior), identity direction, the liver centre near the origin. Arrays are in
SimpleITK's numpy order (z, y, x).

Latent lesion traits are rendered as (docs/design.md section 5):
- heterogeneity h: amplitude (x exp(a h)) and correlation length (x exp(-b h)) of a Gaussian
  random texture;
- margin irregularity g: radial perturbation of the surface, relative amplitude
  max * logistic(slope * g - 1);
- rim enhancement: an enhancing rim of HU rim_enhancement * (1 + tanh(rim));
- necrotic fraction: the deepest fraction of the lesion's voxels is a low-density core.
The largest lesion's maximum diameter (between voxel centres) equals the clinical table's
value to within half a voxel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.special import expit, logit

from features.imaging import LabelRoles
from features.morphology import max_feret_diameter_mm
from pipeline.world import PhantomParams, SiteParams, TraitParams, UnenhancedHU

_HU_MIN, _HU_MAX = -1024, 3071  # the int16 range CT scanners store
_MM_PER_CM = 10.0
_SHAPE_ITERATIONS = 8  # diameter-matching rescalings of one lesion
_SHRINK_ON_FAILED_PLACEMENT = 0.85
_MIN_SECONDARY_MM = 5.0
_MIN_RADIAL_FACTOR = 0.3  # a perturbed surface never folds through the centre
_FOV_MARGIN_MM = 4.0
_NECROSIS_EDGE_MM = 1.0  # softness of the necrotic core's boundary
_NECROTIC_TEXTURE_FACTOR = 0.5
_LEFT_LOBE_SHARE = 0.3  # bilobar disease: share of further lesions on the left
_TEXTURE_MARGIN_SIGMAS = 3.0


@dataclass(frozen=True)
class LesionTraits:
    heterogeneity: float
    irregularity: float
    rim: float
    necrosis: float


@dataclass(frozen=True)
class RenderedLesion:
    """What was drawn for one lesion: physical centre (mm, LPS), diameter and traits."""

    centre_mm: tuple[float, float, float]
    diameter_mm: float
    voxels: int
    lobe: str
    traits: LesionTraits


@dataclass
class Phantom:
    image: sitk.Image
    mask: sitk.Image
    lesions: list[RenderedLesion]


@dataclass(frozen=True)
class _Grid:
    spacing_xyz: np.ndarray
    size_xyz: np.ndarray
    origin_xyz: np.ndarray

    @property
    def spacing_zyx(self) -> np.ndarray:
        return self.spacing_xyz[::-1]

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.size_xyz[::-1])

    def axis(self, k: int) -> np.ndarray:
        """Physical coordinates (mm) of the voxel centres along x (0), y (1) or z (2)."""
        return self.origin_xyz[k] + self.spacing_xyz[k] * np.arange(self.size_xyz[k])

    def index_of(self, point_xyz: np.ndarray) -> np.ndarray:
        return np.rint((point_xyz - self.origin_xyz) / self.spacing_xyz).astype(int)

    def point_of(self, index_xyz: np.ndarray) -> np.ndarray:
        return self.origin_xyz + index_xyz * self.spacing_xyz


def _grid(
    fov_mm: tuple[float, float, float], centre_mm: tuple[float, float, float], spacing_xyz: tuple[float, float, float]
) -> _Grid:
    spacing = np.asarray(spacing_xyz, float)
    size = np.ceil(np.asarray(fov_mm, float) / spacing).astype(int)
    origin = np.asarray(centre_mm, float) - (size - 1) * spacing / 2.0
    return _Grid(spacing, size, origin)


@dataclass(frozen=True)
class _PlaneWaveField:
    """A random smooth function on the unit sphere with mean ~0 and variance ~1:
    f(u) = sqrt(2 / W) * sum_w cos(frequency_w * (direction_w . u) + phase_w).

    ``curvature`` bounds the second derivative along any line, so that
    |f(v) - f(u) - grad f(u) . (v - u)| <= curvature * |v - u|^2 / 2.
    """

    directions: np.ndarray
    frequencies: np.ndarray
    phases: np.ndarray

    @property
    def norm(self) -> float:
        return float(np.sqrt(2.0 / len(self.frequencies)))

    @property
    def bound(self) -> float:
        """Bound on |f|: sqrt(2 W)."""
        return self.norm * len(self.frequencies)

    @property
    def curvature(self) -> float:
        """Bound on the second derivative of f along any straight line (sum of norm * frequency^2)."""
        return self.norm * float((self.frequencies**2).sum())

    def value_and_gradient(self, unit_xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """f and its gradient (as a function on R^3) at ``unit_xyz`` (..., 3)."""
        angle = np.tensordot(unit_xyz, self.directions.T, axes=([-1], [0])) * self.frequencies + self.phases
        value = self.norm * np.cos(angle).sum(axis=-1)
        gradient = -self.norm * np.tensordot(np.sin(angle) * self.frequencies, self.directions, axes=([-1], [0]))
        return value, gradient

    def __call__(self, unit_xyz: np.ndarray) -> np.ndarray:
        proj = np.tensordot(unit_xyz, self.directions.T, axes=([-1], [0]))  # (..., waves)
        return self.norm * np.cos(proj * self.frequencies + self.phases).sum(axis=-1)


def _plane_wave_field(rng: np.random.Generator, waves: int) -> _PlaneWaveField:
    """Draw a `_PlaneWaveField` of ``waves`` waves."""
    directions = rng.standard_normal((waves, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    frequencies = rng.uniform(np.pi, 3 * np.pi, waves)
    phases = rng.uniform(0, 2 * np.pi, waves)
    return _PlaneWaveField(directions, frequencies, phases)


_ANCHOR_STEP = 4  # voxels between the anchors of `_inside_perturbed_surface`
_BOUND_SLACK = 1e-9  # margin for rounding in the bound (rho and f are ~1)


def _inside_perturbed_surface(
    q_axes: tuple[np.ndarray, np.ndarray, np.ndarray],
    rho: np.ndarray,
    shell: np.ndarray,
    amplitude: float,
    field: _PlaneWaveField,
) -> np.ndarray:
    """``rho <= 1 + amplitude * field(q / rho)`` at the ``shell`` voxels, evaluating the field
    only where a cheaper bound cannot decide.

    ``q_axes`` are the normalised coordinates along x, y, z (1-D, the box's axes), ``rho`` the
    norm of q over the box. The field and its gradient are evaluated on a coarse grid of anchors
    (every `_ANCHOR_STEP`-th voxel); at a voxel of direction u near its anchor's u_a, Taylor's
    bound |f(u) - f(u_a) - grad f(u_a) . (u - u_a)| <= curvature |u - u_a|^2 / 2 decides the
    voxels whose rho lies outside that interval (with a margin for rounding). The others get
    the exact field, computed as over the whole shell, so the result is the same to the bit.
    """
    qx, qy, qz = q_axes
    iz, iy, ix = np.nonzero(shell)
    r = rho[shell]
    ux, uy, uz = qx[ix] / r, qy[iy] / r, qz[iz] / r
    step = _ANCHOR_STEP
    anchor = [np.arange(0, len(a), step) for a in (qz, qy, qx)]
    az, ay, ax = (np.minimum((i + step // 2) // step, len(a) - 1) for i, a in zip((iz, iy, ix), anchor, strict=True))
    cz, cy, cx = np.meshgrid(qz[anchor[0]], qy[anchor[1]], qx[anchor[2]], indexing="ij")
    c_rho = np.sqrt(cx * cx + cy * cy + cz * cz)
    with np.errstate(invalid="ignore", divide="ignore"):
        c_unit = np.stack([cx, cy, cz], axis=-1) / c_rho[..., None]
    c_unit[c_rho == 0] = np.nan  # no direction: never decides a voxel
    c_value, c_gradient = field.value_and_gradient(c_unit)
    flat = np.ravel_multi_index((az, ay, ax), c_rho.shape)
    cu, grad = c_unit.reshape(-1, 3)[flat], c_gradient.reshape(-1, 3)[flat]
    dx, dy, dz = ux - cu[:, 0], uy - cu[:, 1], uz - cu[:, 2]
    estimate = c_value.ravel()[flat] + grad[:, 0] * dx + grad[:, 1] * dy + grad[:, 2] * dz
    error = 0.5 * field.curvature * (dx * dx + dy * dy + dz * dz)
    surely_in = r <= 1.0 + amplitude * (estimate - error) - _BOUND_SLACK
    surely_out = r > 1.0 + amplitude * (estimate + error) + _BOUND_SLACK
    undecided = ~(surely_in | surely_out)  # NaN anchors land here
    inside = surely_in
    unit = np.stack([ux[undecided], uy[undecided], uz[undecided]], axis=-1)
    inside[undecided] = r[undecided] <= 1.0 + amplitude * field(unit)
    return inside


def _correlated_texture(
    rng: np.random.Generator, shape: tuple[int, ...], correlation_mm: float, spacing_zyx: np.ndarray
) -> np.ndarray:
    """Gaussian random field with unit SD and a Gaussian correlation of ``correlation_mm``."""
    noise = rng.standard_normal(shape).astype(np.float32)
    field = ndimage.gaussian_filter(noise, sigma=correlation_mm / spacing_zyx, mode="reflect")
    sd = field.std()
    return field / sd if sd > 0 else field


def _lesion_shape(diameter_mm: float, amplitude: float, field: _PlaneWaveField, spacing_zyx: np.ndarray) -> np.ndarray:
    """A star-shaped lesion mask centred on the middle voxel of its box whose maximum
    diameter (voxel centres) matches ``diameter_mm``."""
    radius = diameter_mm / 2.0
    best: tuple[float, np.ndarray] | None = None
    for _ in range(_SHAPE_ITERATIONS):
        reach = radius * (1.0 + 4.0 * amplitude) + spacing_zyx.max()
        half = np.ceil(reach / spacing_zyx).astype(int) + 1
        axes = [np.arange(-h, h + 1) * sp for h, sp in zip(half, spacing_zyx, strict=True)]
        z, y, x = np.meshgrid(*axes, indexing="ij")
        rho = np.sqrt(x * x + y * y + z * z)
        # The surface radius * max(1 + amplitude * f, floor) lies between radius * floor and
        # radius * (1 + amplitude * max|f|): the field is evaluated only between the two.
        mask = rho <= radius * _MIN_RADIAL_FACTOR
        outer = radius * (1.0 + abs(amplitude) * field.bound) * (1.0 + _BOUND_SLACK)
        near = ~mask & (rho <= outer)
        unit = np.stack([x[near], y[near], z[near]], axis=-1) / rho[near][:, None]
        mask[near] = rho[near] <= radius * np.maximum(1.0 + amplitude * field(unit), _MIN_RADIAL_FACTOR)
        measured = max_feret_diameter_mm(mask, tuple(spacing_zyx[::-1]))
        error = abs(measured - diameter_mm)
        if best is None or error < best[0]:
            best = (error, mask)
        if error <= 0.25 * spacing_zyx.min() or measured == 0:
            break
        radius *= diameter_mm / measured
    return best[1]


def _jittered_traits(rng: np.random.Generator, base: LesionTraits, sd: float) -> LesionTraits:
    return LesionTraits(
        heterogeneity=base.heterogeneity + sd * rng.standard_normal(),
        irregularity=base.irregularity + sd * rng.standard_normal(),
        rim=base.rim + sd * rng.standard_normal(),
        necrosis=float(expit(logit(np.clip(base.necrosis, 1e-3, 1 - 1e-3)) + sd * rng.standard_normal())),
    )


def _margin_amplitude(g: float, p: PhantomParams) -> float:
    return p.margin_amplitude_max * float(expit(p.margin_g_slope * g - 1.0))


def _enhanced(hu: float, unenhanced: float, enhancement: float) -> float:
    return unenhanced + enhancement * (hu - unenhanced)


def _lesion_hu(
    rng: np.random.Generator,
    mask: np.ndarray,
    t: LesionTraits,
    p: PhantomParams,
    site: SiteParams,
    unenhanced: UnenhancedHU,
    spacing_zyx: np.ndarray,
) -> np.ndarray:
    """Attenuation inside one lesion: base, texture, necrotic core, enhancing rim."""
    depth = ndimage.distance_transform_edt(np.pad(mask, 1), sampling=spacing_zyx)[1:-1, 1:-1, 1:-1]
    inside = depth[mask]
    base = _enhanced(p.hu.lesion, unenhanced.lesion, site.enhancement)
    correlation = p.lesion_correlation_mm * np.exp(-p.correlation_per_h * t.heterogeneity)
    texture_sd = p.lesion_texture_sd_hu * np.exp(p.texture_sd_per_h * t.heterogeneity)
    texture = _correlated_texture(rng, mask.shape, correlation, spacing_zyx)
    core_depth = np.quantile(inside, 1.0 - t.necrosis)
    core = expit((depth - core_depth) / _NECROSIS_EDGE_MM)
    hu = (1 - core) * base + core * p.hu.necrosis
    hu += texture_sd * texture * (1 - (1 - _NECROTIC_TEXTURE_FACTOR) * core)
    rim_hu = p.rim_enhancement_hu * site.enhancement * (1.0 + np.tanh(t.rim))
    hu += rim_hu * np.exp(-(depth - inside.min()) / p.rim_thickness_mm)
    return hu


def _tube(
    axes_xyz: tuple[np.ndarray, np.ndarray, np.ndarray], start: np.ndarray, end: np.ndarray, radius: float
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Voxels of the grid spanned by ``axes_xyz`` (voxel centres in mm, (z, y, x) array order)
    within ``radius`` of a segment.

    Only the voxels inside the segment's bounding box (grown by the radius) are tested; returns
    that box (slices into the grid) and the tube's mask within it. The points of the box are
    tested in the same order and with the same arithmetic as over the whole grid.
    """
    lo, hi = np.minimum(start, end) - radius, np.maximum(start, end) + radius
    box = []
    for k in (2, 1, 0):
        hits = np.flatnonzero((axes_xyz[k] >= lo[k]) & (axes_xyz[k] <= hi[k]))  # contiguous: axes increase
        box.append(slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else slice(0, 0))
    box = tuple(box)
    zz, yy, xx = np.meshgrid(axes_xyz[2][box[0]], axes_xyz[1][box[1]], axes_xyz[0][box[2]], indexing="ij")
    candidates = np.stack([xx, yy, zz], axis=-1).reshape(-1, 3)
    direction = end - start
    t = np.clip(((candidates - start) @ direction) / (direction @ direction), 0.0, 1.0)
    closest = start + t[:, None] * direction
    inside = np.sum((candidates - closest) ** 2, axis=-1) <= radius**2
    return box, inside.reshape(xx.shape)


def render_phantom(
    n_lesions: int,
    largest_cm: float,
    bilobar: bool,
    traits: LesionTraits,
    phantom: PhantomParams,
    site: SiteParams,
    unenhanced: UnenhancedHU,
    trait_params: TraitParams,
    labels: LabelRoles,
    seed: np.random.SeedSequence,
    patient_id: str = "",
) -> Phantom:
    """Render one patient's CT (int16 HU) and label mask (uint8).

    ``largest_cm`` is the maximum 3-D diameter of the largest lesion (cm), ``n_lesions`` the
    number of separate lesions, ``bilobar`` whether they lie in both lobes.
    """
    if n_lesions < 1:
        raise ValueError(f"patient {patient_id}: n_lesions must be at least 1, got {n_lesions}")
    if bilobar and n_lesions < 2:
        raise ValueError(f"patient {patient_id}: bilobar disease needs at least two lesions")
    rng = np.random.default_rng(seed)
    p = phantom
    grid = _grid(p.field_of_view_mm, p.field_of_view_centre_mm, site.spacing_mm)
    shape = grid.shape_zyx
    x = grid.axis(0)[None, None, :]
    y = grid.axis(1)[None, :, None]
    z = grid.axis(2)[:, None, None]

    hu = np.full(shape, p.hu.air, dtype=np.float32)
    labelmap = np.zeros(shape, dtype=np.uint8)

    # Body: a fat-lined elliptic cylinder of soft tissue, the spine and the aorta.
    bx, by = p.body_centre_mm
    ax, ay = p.body_semi_axes_mm
    fat = p.subcutaneous_fat_mm
    body = ((x - bx) / ax) ** 2 + ((y - by) / ay) ** 2 <= 1.0
    inner = ((x - bx) / (ax - fat)) ** 2 + ((y - by) / (ay - fat)) ** 2 <= 1.0
    hu[:, body[0]] = p.hu.fat  # (y, x) masks, the same in every slice
    hu[:, inner[0]] = p.hu.muscle
    for (cx, cy), radius, value in (
        (p.spine_centre_mm, p.spine_radius_mm, p.hu.bone),
        (p.aorta_centre_mm, p.aorta_radius_mm, _enhanced(p.hu.vessel, unenhanced.vessel, site.enhancement)),
    ):
        hu[:, ((x - cx) ** 2 + (y - cy) ** 2 <= radius**2)[0]] = value

    # Liver: a lobulated ellipsoid, evaluated in its bounding box only.
    semi = np.asarray(p.liver_semi_axes_mm) * (1.0 + p.liver_semi_axes_jitter * rng.standard_normal(3))
    liver_field = _plane_wave_field(rng, p.margin_frequency_waves)
    reach = semi * (1.0 + 4.0 * p.liver_shape_lobulation)
    lo = np.maximum(grid.index_of(-reach), 0)
    hi = np.minimum(grid.index_of(reach) + 1, grid.size_xyz)
    box = tuple(slice(a, b) for a, b in zip(lo[::-1], hi[::-1], strict=True))
    box_axes = (grid.axis(0)[box[2]], grid.axis(1)[box[1]], grid.axis(2)[box[0]])  # x, y, z (mm)
    # Normalised coordinates q = point / semi-axes, broadcast from the axes (no (z, y, x, 3)
    # array of points); rho = |q| summed in the order x, y, z as np.linalg.norm does.
    qx = (box_axes[0] / semi[0])[None, None, :]
    qy = (box_axes[1] / semi[1])[None, :, None]
    qz = (box_axes[2] / semi[2])[:, None, None]
    rho = np.sqrt(qx * qx + qy * qy + qz * qz)
    # The perturbed surface lies within |field| <= sqrt(2 * waves) of the ellipsoid: evaluate
    # the field only in that shell (the same values, a third of the work).
    reach = p.liver_shape_lobulation * np.sqrt(2.0 * p.margin_frequency_waves)
    shell = np.abs(rho - 1.0) <= reach
    liver = rho < 1.0 - reach
    liver[shell] = _inside_perturbed_surface(
        (qx.ravel(), qy.ravel(), qz.ravel()), rho, shell, p.liver_shape_lobulation, liver_field
    )
    liver_hu = _enhanced(p.hu.liver, unenhanced.liver, site.enhancement)
    liver_texture = _correlated_texture(rng, liver.shape, p.liver_texture_correlation_mm, grid.spacing_zyx)
    hu[box][liver] = liver_hu + p.liver_texture_sd_hu * liver_texture[liver]
    labelmap[box][liver] = labels.liver

    # Vessels: portal branches and hepatic veins inside the liver (labelled liver), and the
    # intrahepatic inferior vena cava (not liver).
    vessel_hu = _enhanced(p.hu.vessel, unenhanced.vessel, site.enhancement)
    ivc_x, ivc_y = p.ivc_centre_mm
    top = np.array([ivc_x, ivc_y, 0.7 * semi[2]])
    hilum = np.array([0.1 * semi[0], 0.25 * semi[1], -0.25 * semi[2]])
    jitter = lambda: rng.normal(0.0, 0.05, 3) * semi  # noqa: E731 - tiny local helper
    segments = [
        (hilum, np.array([-0.6, 0.05, -0.05]) * semi + jitter(), p.portal_vein_radius_mm),
        (hilum, np.array([0.55, -0.05, 0.05]) * semi + jitter(), p.portal_vein_radius_mm * 0.8),
        (top, np.array([-0.65, 0.1, 0.45]) * semi + jitter(), p.hepatic_vein_radius_mm),
        (top, np.array([-0.05, -0.35, 0.55]) * semi + jitter(), p.hepatic_vein_radius_mm),
        (top, np.array([0.5, -0.1, 0.4]) * semi + jitter(), p.hepatic_vein_radius_mm * 0.8),
    ]
    for start, end, radius in segments:
        tube_box, tube = _tube(box_axes, start, end, radius)
        hu[box][tube_box][tube & liver[tube_box]] = vessel_hu
    ivc = ((x - ivc_x) ** 2 + (y - ivc_y) ** 2 <= p.ivc_radius_mm**2)[0]
    slices = np.flatnonzero((z.ravel() <= top[2]) & (z.ravel() >= -semi[2]))
    if slices.size:
        ivc_slices = slice(int(slices[0]), int(slices[-1]) + 1)  # z increases: one run of slices
        hu[ivc_slices, ivc] = vessel_hu
        labelmap[ivc_slices, ivc] = 0

    # Lesions: the largest first, each placed without touching the others.
    largest_mm = largest_cm * _MM_PER_CM
    low, high = p.secondary_size_fraction
    diameters = [largest_mm]
    for _ in range(n_lesions - 1):
        fraction = rng.uniform(low, high)
        d = min(max(largest_mm * fraction, p.secondary_min_cm * _MM_PER_CM), 0.9 * largest_mm)
        diameters.append(d)
    if bilobar:
        lobes = ["right", "left"] + [
            "left" if rng.random() < _LEFT_LOBE_SHARE else "right" for _ in range(n_lesions - 2)
        ]
    else:
        lobes = ["right"] * n_lesions

    placed: list[tuple[np.ndarray, float]] = []  # (centre index xyz, bounding radius mm)
    rendered: list[RenderedLesion] = []
    for k, (diameter, lobe) in enumerate(zip(diameters, lobes, strict=True)):
        t = _jittered_traits(rng, traits, trait_params.lesion_trait_jitter_sd)
        field = _plane_wave_field(rng, p.margin_frequency_waves)
        amplitude = _margin_amplitude(t.irregularity, p)
        while True:
            shape_mask = _lesion_shape(diameter, amplitude, field, grid.spacing_zyx)
            half = np.array(shape_mask.shape[::-1]) // 2  # centre voxel, xyz
            crop = ndimage.find_objects(shape_mask.astype(np.uint8))[0]
            shape_mask = shape_mask[crop]
            half = half - np.array([c.start for c in crop[::-1]])
            offsets = (np.argwhere(shape_mask)[:, ::-1] - half) * grid.spacing_xyz
            bound = float(np.sqrt((offsets**2).sum(axis=1)).max())
            centre = _place(rng, bound, lobe, placed, semi, p, grid, first=(k == 0))
            if centre is not None or diameter <= _MIN_SECONDARY_MM:
                break
            diameter *= _SHRINK_ON_FAILED_PLACEMENT
        if centre is None:
            raise RuntimeError(
                f"patient {patient_id}: could not place lesion {k + 1} of {n_lesions} "
                f"(diameter {diameter:.1f} mm); lower lesions_max or secondary sizes in configs/world.yaml"
            )
        index = grid.index_of(centre)
        start = index - half
        local_box = tuple(slice(a, a + n) for a, n in zip(start[::-1], shape_mask.shape, strict=True))
        values = _lesion_hu(rng, shape_mask, t, p, site, unenhanced, grid.spacing_zyx)
        hu[local_box][shape_mask] = values[shape_mask]
        labelmap[local_box][shape_mask] = labels.lesion
        placed.append((grid.point_of(index), bound))
        rendered.append(
            RenderedLesion(
                tuple(float(c) for c in grid.point_of(index)), float(diameter), int(shape_mask.sum()), lobe, t
            )
        )

    # Scanner: point-spread blur (partial-volume edges), offset, noise, int16 storage.
    hu = ndimage.gaussian_filter(hu, sigma=site.psf_sigma_mm / grid.spacing_zyx)
    hu += site.hu_offset
    hu += rng.normal(0.0, site.noise_sd_hu, shape).astype(np.float32)
    ct = np.clip(np.rint(hu, out=hu), _HU_MIN, _HU_MAX, out=hu).astype(np.int16)

    image = sitk.GetImageFromArray(ct)
    mask = sitk.GetImageFromArray(labelmap)
    for img in (image, mask):
        img.SetSpacing(tuple(float(v) for v in grid.spacing_xyz))
        img.SetOrigin(tuple(float(v) for v in grid.origin_xyz))
        img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return Phantom(image, mask, rendered)


def _place(
    rng: np.random.Generator,
    bound: float,
    lobe: str,
    placed: list[tuple[np.ndarray, float]],
    semi: np.ndarray,
    p: PhantomParams,
    grid: _Grid,
    first: bool,
) -> np.ndarray | None:
    """A centre (mm) for a lesion of bounding radius ``bound`` in ``lobe``, or None."""
    lowest = grid.origin_xyz + _FOV_MARGIN_MM + bound
    highest = grid.point_of(grid.size_xyz - 1) - _FOV_MARGIN_MM - bound
    if np.any(lowest >= highest):
        return None
    gap = p.lesion_gap_mm
    boundary = p.lobe_boundary_x_mm

    def fits(c: np.ndarray) -> bool:
        if np.any(c < lowest) or np.any(c > highest):
            return False
        in_lobe = c[0] + bound <= boundary if lobe == "right" else c[0] - bound >= boundary
        return in_lobe and all(np.linalg.norm(c - other) >= bound + r + gap for other, r in placed)

    for _ in range(p.placement_attempts):
        u = rng.standard_normal(3)
        u *= rng.random() ** (1 / 3) / np.linalg.norm(u)  # uniform in the unit ball
        candidate = grid.point_of(grid.index_of(u * semi * p.lesion_inside_liver_fraction))
        if fits(candidate):
            return candidate
    if first:
        # The largest lesion always fits in the middle of the right lobe.
        fallback = np.array([min(-0.5 * semi[0], boundary - bound), 0.0, 0.0])
        return grid.point_of(grid.index_of(np.clip(fallback, lowest, highest)))
    return None
