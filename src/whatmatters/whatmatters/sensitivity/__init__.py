"""Task sensitivities through the MPC (paper section III): du0/de and |dJ/du0|_eff."""

from whatmatters.sensitivity.compute import SensitivityComputer, SensitivityConfig
from whatmatters.sensitivity.kkt import first_input_sensitivity
from whatmatters.sensitivity.point import SensitivitySample

__all__ = ["SensitivityComputer", "SensitivityConfig", "SensitivitySample", "first_input_sensitivity"]
