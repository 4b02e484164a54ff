"""The built-in VAST VMS simulator: the embedded default every other part runs against.

`SimulatorServer` serves the VMS REST endpoints quotapilot uses over HTTPS (a private CA made at
start), backed by an `Engine` that integrates a `Scenario`'s writes on a fixed simulated-time grid
and enforces quotas; `Faults` injects failures at run time.

May import: the top-level modules (clock, errors, logs, units) only — it stands in for VMS, so it
knows nothing of the daemon's runtime, stages or store.
"""

from quotapilot.daemon.simulator.engine import Engine, EngineError, QuotaRecord
from quotapilot.daemon.simulator.faults import FAULT_KINDS, FaultRule, Faults
from quotapilot.daemon.simulator.scenario import BUILTIN_SCENARIOS, Scenario, ScenarioError, load_scenario
from quotapilot.daemon.simulator.server import SimulatorServer

__all__ = [
    "BUILTIN_SCENARIOS",
    "FAULT_KINDS",
    "Engine",
    "EngineError",
    "FaultRule",
    "Faults",
    "QuotaRecord",
    "Scenario",
    "ScenarioError",
    "SimulatorServer",
    "load_scenario",
]
