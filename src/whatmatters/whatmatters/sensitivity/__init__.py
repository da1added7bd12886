"""Task sensitivities through the MPC (paper section III): du0/de and |dJ/du0|_eff."""

from whatmatters.sensitivity.compute import SensitivityComputer, SensitivityConfig, SensitivitySample
from whatmatters.sensitivity.kkt import first_input_sensitivity

__all__ = ["SensitivityComputer", "SensitivityConfig", "SensitivitySample", "first_input_sensitivity"]
