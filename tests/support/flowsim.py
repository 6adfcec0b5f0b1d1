"""The flow simulator lives in the pure core now (`controller.core.flowsim`): the
connectivity diagnosis evaluates packets with it. Re-exported here for the tests."""

from controller.core.flowsim import (
    CtCall,
    CtModel,
    CtVerdict,
    Emitted,
    FlowSimulator,
    Run,
    SimulationError,
    fixed_state,
    new_connection,
    simulate,
)

__all__ = [
    "CtCall",
    "CtModel",
    "CtVerdict",
    "Emitted",
    "FlowSimulator",
    "Run",
    "SimulationError",
    "fixed_state",
    "new_connection",
    "simulate",
]
