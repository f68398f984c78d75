"""Parameters of the simulated CRLM world (docs/design.md section 5), as read from ``configs/world.yaml``.

Each settings class mirrors one block of the file; `features.settings.load` rejects unknown keys.
The values themselves live only in the YAML file.
"""

from __future__ import annotations

import math
from pathlib import Path

from features import schema, settings
from features.imaging import LabelRoles
from features.settings import settings_class

_PROBABILITY_TOLERANCE = 1e-6


def _check_probabilities(name: str, values: tuple[float, ...] | dict[str, float]) -> None:
    probs = list(values.values()) if isinstance(values, dict) else list(values)
    if any(p < 0 for p in probs) or not math.isclose(sum(probs), 1.0, abs_tol=_PROBABILITY_TOLERANCE):
        raise ValueError(f"{name} must be non-negative and sum to 1, got {values}")


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


@settings_class
class ClinicalParams:
    age_mean_years: float
    age_sd_years: float
    age_min_years: float
    age_max_years: float
    male_fraction: float
    ecog_probabilities: tuple[float, ...]
    primary_site_probabilities: dict[str, float]
    t_stage_probabilities: tuple[float, float, float, float]
    node_positive_fraction: float
    synchronous_fraction: float
    dfi_gamma_shape: float
    dfi_gamma_scale_months: float
    lesions_negbin_n: int
    lesions_negbin_p: float
    lesions_max: int
    largest_median_cm: float
    largest_sigma: float
    largest_min_cm: float
    largest_max_cm: float
    bilobar_fraction_if_multiple: float
    cea_median_ng_ml: float
    cea_sigma: float
    cea_burden_correlation: float
    ca19_9_median_u_ml: float
    ca19_9_sigma: float
    ca19_9_cea_correlation: float
    ras_fraction_right: float
    ras_fraction_other: float
    braf_fraction_right_ras_wt: float
    braf_fraction_other_ras_wt: float
    msi_fraction_braf: float
    msi_fraction_other: float
    extrahepatic_fraction: float
    margin_positive_fraction: float
    chemo_regimen_probabilities: dict[str, float]
    anti_egfr_fallback_regimen: str
    chemo_cycles_choices: tuple[int, ...]
    chemo_cycles_probabilities: tuple[float, ...]
    months_per_cycle: float
    surgery_delay_months: float

    def __post_init__(self) -> None:
        _check_probabilities("ecog_probabilities", self.ecog_probabilities)
        _check_probabilities("primary_site_probabilities", self.primary_site_probabilities)
        _check_probabilities("t_stage_probabilities", self.t_stage_probabilities)
        _check_probabilities("chemo_regimen_probabilities", self.chemo_regimen_probabilities)
        _check_probabilities("chemo_cycles_probabilities", self.chemo_cycles_probabilities)
        if set(self.primary_site_probabilities) != set(schema.PRIMARY_SITES):
            raise ValueError(
                f"primary_site_probabilities needs exactly {schema.PRIMARY_SITES}, "
                f"got {tuple(self.primary_site_probabilities)}"
            )
        for regimen in (*self.chemo_regimen_probabilities, self.anti_egfr_fallback_regimen):
            if regimen not in schema.CHEMO_REGIMENS:
                raise ValueError(f"unknown chemo regimen '{regimen}'; allowed: {schema.CHEMO_REGIMENS}")
        if len(self.chemo_cycles_choices) != len(self.chemo_cycles_probabilities):
            raise ValueError("chemo_cycles_choices and chemo_cycles_probabilities differ in length")
        for name in (
            "male_fraction",
            "node_positive_fraction",
            "synchronous_fraction",
            "lesions_negbin_p",
            "bilobar_fraction_if_multiple",
            "ras_fraction_right",
            "ras_fraction_other",
            "braf_fraction_right_ras_wt",
            "braf_fraction_other_ras_wt",
            "msi_fraction_braf",
            "msi_fraction_other",
            "extrahepatic_fraction",
            "margin_positive_fraction",
        ):
            _check_fraction(name, getattr(self, name))
        if not 0 < self.largest_min_cm < self.largest_max_cm:
            raise ValueError("need 0 < largest_min_cm < largest_max_cm")
        if self.lesions_max < 1:
            raise ValueError(f"lesions_max must be at least 1, got {self.lesions_max}")


@settings_class
class TraitParams:
    necrosis_beta_a: float
    necrosis_beta_b: float
    lesion_trait_jitter_sd: float


@settings_class
class RecurrenceLogHazardRatios:
    """Log hazard ratios of the true recurrence model (per unit or per present factor)."""

    node_positive: float
    dfi_under_12: float
    multiple_lesions: float
    largest_over_5cm: float
    cea_over_200: float
    ras_mutant: float
    extrahepatic: float
    margin_positive: float
    progression_on_chemo: float
    heterogeneity: float
    irregularity: float
    heterogeneity_x_irregularity: float
    rim: float


@settings_class
class RecurrenceThresholds:
    dfi_months: float
    largest_cm: float
    cea_ng_ml: float


@settings_class
class RecurrenceParams:
    weibull_shape: float
    weibull_scale_months: float
    thresholds: RecurrenceThresholds
    log_hr: RecurrenceLogHazardRatios
    censoring_uniform_months: tuple[float, float]
    censoring_exponential_mean_months: float

    def __post_init__(self) -> None:
        if self.weibull_shape <= 0 or self.weibull_scale_months <= 0:
            raise ValueError("Weibull shape and scale must be positive")
        low, high = self.censoring_uniform_months
        if not 0 <= low < high:
            raise ValueError(f"censoring_uniform_months needs 0 <= low < high, got {low, high}")


@settings_class
class ResponseCoefficients:
    """Terms of the true response logit (before `ResponseParams.scale`)."""

    ras_wild_type: float
    anti_egfr_if_ras_wild_type: float
    triplet_chemo: float
    largest_over_5cm: float
    log1p_lesions: float
    heterogeneity: float
    rim: float
    necrosis: float
    cea_under_20: float


@settings_class
class ResponseThresholds:
    largest_cm: float
    cea_ng_ml: float


@settings_class
class ResponseParams:
    intercept: float
    thresholds: ResponseThresholds
    scale: float
    coef: ResponseCoefficients
    complete_response_fraction_of_responders: float
    progression_fraction_of_non_responders: float


@settings_class
class TissueHU:
    air: float
    fat: float
    muscle: float
    bone: float
    liver: float
    vessel: float
    lesion: float
    necrosis: float


@settings_class
class PhantomParams:
    """Anatomy of the CT phantom, in mm and HU, LPS axes, liver centre at the origin."""

    field_of_view_mm: tuple[float, float, float]
    field_of_view_centre_mm: tuple[float, float, float]
    body_semi_axes_mm: tuple[float, float]
    body_centre_mm: tuple[float, float]
    subcutaneous_fat_mm: float
    spine_centre_mm: tuple[float, float]
    spine_radius_mm: float
    aorta_centre_mm: tuple[float, float]
    aorta_radius_mm: float
    ivc_centre_mm: tuple[float, float]
    ivc_radius_mm: float
    liver_semi_axes_mm: tuple[float, float, float]
    liver_shape_lobulation: float
    liver_semi_axes_jitter: float
    lobe_boundary_x_mm: float
    portal_vein_radius_mm: float
    hepatic_vein_radius_mm: float
    hu: TissueHU
    liver_texture_sd_hu: float
    liver_texture_correlation_mm: float
    lesion_texture_sd_hu: float
    texture_sd_per_h: float
    lesion_correlation_mm: float
    correlation_per_h: float
    margin_amplitude_max: float
    margin_g_slope: float
    margin_frequency_waves: int
    rim_thickness_mm: float
    rim_enhancement_hu: float
    lesion_gap_mm: float
    secondary_size_fraction: tuple[float, float]
    secondary_min_cm: float
    placement_attempts: int
    lesion_inside_liver_fraction: float


@settings_class
class SiteParams:
    """Scanner settings of one acquisition site."""

    spacing_mm: tuple[float, float, float]
    psf_sigma_mm: float
    noise_sd_hu: float
    hu_offset: float
    enhancement: float

    def __post_init__(self) -> None:
        if min(self.spacing_mm) <= 0:
            raise ValueError(f"spacing_mm must be positive, got {self.spacing_mm}")


@settings_class
class UnenhancedHU:
    liver: float
    vessel: float
    lesion: float


@settings_class
class World:
    """The whole simulated world: clinical marginals, outcome models, phantom and sites."""

    clinical: ClinicalParams
    traits: TraitParams
    recurrence: RecurrenceParams
    response: ResponseParams
    phantom: PhantomParams
    sites: dict[str, SiteParams]
    unenhanced_hu: UnenhancedHU

    def site(self, name: str) -> SiteParams:
        """Settings of site ``name``, with an error listing the configured sites."""
        if name not in self.sites:
            raise settings.SettingsError(f"unknown site '{name}'; configured sites: {', '.join(sorted(self.sites))}")
        return self.sites[name]


def load_world(path: str | Path) -> World:
    """Read the simulated world from a YAML file (e.g. ``configs/world.yaml``)."""
    return settings.load(World, path)


def load_labels(path: str | Path) -> LabelRoles:
    """Read label roles from a YAML file (e.g. ``configs/labels.yaml``)."""
    return settings.load(LabelRoles, path)
