"""Supervisors: child specs, OTP strategies, restart intensity and backoff."""

from .._errors import RestartIntensityExceeded as RestartIntensityExceeded
from ._open import open_dynamic_supervisor as open_dynamic_supervisor
from ._open import open_supervisor as open_supervisor
from ._policy import Backoff as Backoff
from ._policy import RestartType as RestartType
from ._policy import RestartWindow as RestartWindow
from ._policy import Strategy as Strategy
from ._spec import ChildInfo as ChildInfo
from ._spec import ChildSpec as ChildSpec
from ._spec import SupervisorStatistics as SupervisorStatistics
from ._supervisor import Supervisor as Supervisor

__all__ = (
    "Backoff",
    "ChildInfo",
    "ChildSpec",
    "RestartIntensityExceeded",
    "RestartType",
    "RestartWindow",
    "Strategy",
    "Supervisor",
    "SupervisorStatistics",
    "open_dynamic_supervisor",
    "open_supervisor",
)
