"""Scaling laws for split model training: fit L(N, D, D'), extrapolate, choose the split.

N is the model size, D the pretraining (mixture) tokens of the shared trunk, D' the
continued-pretraining tokens of each domain specialist. ``laws.forms`` holds the registry
of functional forms, ``laws.fit`` the fitter, ``laws.select`` held-out model selection,
``laws.allocate`` the compute split, ``laws.report`` the plots; ``python -m laws`` (or
``msplit laws``) drives them.
"""

from laws.allocate import AllocationConfig, Split
from laws.data import DataError, DataWarning, Table, load_table
from laws.fit import FitConfig, FitError, FitResult, FittedLaw
from laws.forms import FORMS, Form, Param, get_form, register_form
from laws.select import SelectionConfig

__all__ = [
    "FORMS",
    "AllocationConfig",
    "DataError",
    "DataWarning",
    "FitConfig",
    "FitError",
    "FitResult",
    "FittedLaw",
    "Form",
    "Param",
    "SelectionConfig",
    "Split",
    "Table",
    "get_form",
    "load_table",
    "register_form",
]
