"""The built-in VAST VMS simulator: the embedded default every other part runs against.

`SimulatorServer` serves the VMS REST endpoints quotapilot uses over HTTPS (a private CA made at
start), backed by an `Engine` that integrates a `Scenario`'s writes on a fixed simulated-time grid
and enforces quotas; `Faults` injects failures at run time.

Modules by concern: `scenario` (the TOML: cluster, views, ingest, timed events, fault rules),
`ingest` (what the streams offer per step), `engine` (the simulated cluster: integration of the
offered writes against quotas and the pool, limits, a timeline of scheduled actions),
`truth` (the ground truth of writes: who changed which limit when), `events` (a scenario's events
and faults put on the timeline), `faults` (the fault rules), `render` (VMS objects as JSON),
`answers` (DRF-style answers and parsing), `routes` (the VMS endpoints on aiohttp's router),
`admin` (`/_sim/...`), `middlewares` (errors, faults, auth), `server` (the HTTPS server), `tls`.
It imports only `quotapilot.daemon.{clock,errors,logs,units}` of the daemon.
May import: the top-level modules (clock, errors, logs, units) only — it stands in for VMS, so it
knows nothing of the daemon's runtime, stages or store.
"""

from quotapilot.daemon.simulator.engine import Engine, EngineError, QuotaRecord
from quotapilot.daemon.simulator.faults import FAULT_KINDS, FaultRule, Faults
from quotapilot.daemon.simulator.scenario import BUILTIN_SCENARIOS, Scenario, ScenarioError, load_scenario
from quotapilot.daemon.simulator.server import SimulatorServer
from quotapilot.daemon.simulator.truth import WriteLog, WriteRecord

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
    "WriteLog",
    "WriteRecord",
    "load_scenario",
]
