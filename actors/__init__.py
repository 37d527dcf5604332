"""The runtime: profile actors, the supervisor, and the embedded :class:`Runtime` facade.

``Runtime`` is what applications hold; ``ProfileSpec`` + a handler factory
(:func:`position_factory`, :func:`grid_factory`) describe each profile.
"""

from actors.events import EventSink
from actors.grid_profile import GridProfile, GridProfileConfig, grid_factory
from actors.ownership import OwnershipIndex
from actors.position_profile import PositionProfile, PositionProfileConfig, position_factory
from actors.profile import CrashNow, HandlerFactory, InjectedCrash, ProfileActor, ProfileHandler
from actors.runtime import Runtime, exchange_order_key
from actors.supervisor import DeadLetter, ProfileSpec, RestartPolicy, Status, Supervisor

__all__ = [
    "CrashNow",
    "DeadLetter",
    "EventSink",
    "GridProfile",
    "GridProfileConfig",
    "HandlerFactory",
    "InjectedCrash",
    "OwnershipIndex",
    "PositionProfile",
    "PositionProfileConfig",
    "ProfileActor",
    "ProfileHandler",
    "ProfileSpec",
    "RestartPolicy",
    "Runtime",
    "Status",
    "Supervisor",
    "exchange_order_key",
    "grid_factory",
    "position_factory",
]
