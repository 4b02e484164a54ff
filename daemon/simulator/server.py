"""The simulator's HTTPS server: the VMS REST endpoints quotapilot uses, answered from an `Engine`.

```python
async with SimulatorServer(scenario="cosmos7", clock=VirtualClock(), seed=0) as sim:
    client = vastpy.VASTClient(address=sim.address, token=sim.token, cert_file=str(sim.ca_file))
```

An aiohttp application: the VMS routes (`routes.py`) and the admin routes (`admin.py`, outside
`/api`: faults, ground truth, token expiry) on its router, behind the middlewares for errors,
faults and auth (`middlewares.py`). The scenario's timed events and fault rules (`events.py`) are
installed at construction; `on_clock_step` hooks hear its wall-clock steps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import ipaddress
import secrets
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from quotapilot.daemon.clock import Clock, SystemClock
from quotapilot.daemon.logs import get_logger
from quotapilot.daemon.simulator import admin, routes
from quotapilot.daemon.simulator.answers import ApiError
from quotapilot.daemon.simulator.engine import Engine
from quotapilot.daemon.simulator.events import EventLog, install
from quotapilot.daemon.simulator.faults import Faults
from quotapilot.daemon.simulator.middlewares import errors, make_auth, make_faults
from quotapilot.daemon.simulator.render import Renderer
from quotapilot.daemon.simulator.scenario import Scenario, load_scenario
from quotapilot.daemon.simulator.tls import TlsFiles, make_certificates, server_context

log = get_logger(__name__)


class SimulatorServer:
    """The built-in VMS simulator: an `Engine` behind an HTTPS aiohttp server on loopback.

    `start()`/`stop()` may be repeated: a restarted server keeps its port, CA, token and state.
    `start` (epoch seconds) pins the simulated start; by default it is the clock's time.
    """

    def __init__(self, scenario: str | Path | Scenario = "cosmos7", *, clock: Clock | None = None, seed: int = 0,
                 host: str = "127.0.0.1", port: int = 0, extra_quotas: int = 0,
                 state_dir: Path | None = None, user: str = "admin", password: str | None = None,
                 token: str | None = None) -> None:
        self.scenario = load_scenario(scenario)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.seed = seed
        self.host = host
        self.port = port
        self.engine = Engine(self.scenario, seed=seed, start=self.clock.now(), extra_quotas=extra_quotas)
        self.faults = Faults(seed)
        self.render = Renderer(self.engine, lambda: self.address, host)
        self.user = user
        self.password = password if password is not None else secrets.token_urlsafe(12)
        self.token = token if token is not None else secrets.token_hex(20)
        self.wall_offset_seconds = 0.0
        """How far the simulated VMS's wall clock is from simulated time (scenario clock steps)."""
        self.on_clock_step: list[Callable[[float], None]] = []
        """Called with the step (seconds) at each scenario `clock_step` event."""
        self.events: EventLog = install(self.engine, self.faults, self._clock_step)
        self._expired_tokens: set[str] = set()
        self._state_dir_arg = state_dir
        self._state_dir: Path | None = None
        self._own_state_dir = False
        self._tls: TlsFiles | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.requests: Counter[str] = Counter()  # "GET quotas" -> count, for tests and benchmarks

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """`host:port` as vastpy's `address` wants it."""
        return f"{self.host}:{self.port}"

    @property
    def ca_file(self) -> Path:
        """The private CA (PEM) that signed the server certificate: vastpy's `cert_file`."""
        if self._tls is None:
            raise RuntimeError("the simulator has not been started")
        return self._tls.ca_file

    @property
    def running(self) -> bool:
        return self._runner is not None

    def client_info(self) -> dict[str, Any]:
        """Everything a client needs (what `quotapilot simulator --json` prints)."""
        return {"address": self.address, "ca_file": str(self.ca_file), "token": self.token,
                "user": self.user, "password": self.password, "scenario": self.scenario.name}

    def application(self) -> web.Application:
        """The aiohttp application: routes behind the error, fault and auth middlewares."""
        app = web.Application(client_max_size=1024**2, middlewares=[errors, make_faults(self), make_auth(self)])
        app[routes.SIM] = routes.SimState(self.engine, self.render, lambda: self.wall_offset_seconds)
        app[admin.ADMIN] = self
        app.add_routes(routes.ROUTES)
        app.add_routes(admin.ROUTES)
        return app

    async def start(self) -> None:
        if self._runner is not None:
            return
        if self._tls is None:
            if self._state_dir_arg is None:
                self._state_dir = Path(tempfile.mkdtemp(prefix="quotapilot-sim-"))
                self._own_state_dir = True
            else:
                self._state_dir = self._state_dir_arg
            hostnames, addresses = ["localhost"], ["127.0.0.1", "::1"]
            try:
                if ipaddress.ip_address(self.host).compressed not in addresses:
                    addresses.append(self.host)
            except ValueError:
                hostnames.append(self.host)
            self._tls = make_certificates(self._state_dir, tuple(hostnames), tuple(addresses))
        self._stopping = asyncio.Event()
        # vastpy drops each connection after one request; idle ones need not linger long
        runner = web.AppRunner(self.application(), access_log=None, handle_signals=False, shutdown_timeout=0.5,
                               keepalive_timeout=15.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, ssl_context=server_context(self._tls),
                           reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = site._server
        if self.port == 0 and server is not None:
            sockets = getattr(server, "sockets", None) or []
            self.port = int(sockets[0].getsockname()[1])
        log.info("simulator.started", address=self.address, scenario=self.scenario.name, seed=self.seed)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._stopping.set()
        await runner.cleanup()
        log.info("simulator.stopped", address=self.address)

    async def close(self) -> None:
        """Stop and remove the temporary state directory (if the simulator made it)."""
        await self.stop()
        if self._own_state_dir and self._state_dir is not None:
            shutil.rmtree(self._state_dir, ignore_errors=True)
            self._tls = None
            self._state_dir = None

    async def __aenter__(self) -> SimulatorServer:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def expire_token(self) -> str:
        """The current API token stops working (401 "Token has expired."); returns the new one."""
        self._expired_tokens.add(self.token)
        self.token = secrets.token_hex(20)
        return self.token

    # -- for the middlewares and admin routes ---------------------------------------------------

    def sync(self) -> None:
        """Bring the engine up to the clock (scheduled events and delayed writes included)."""
        self.engine.advance_to(self.clock.now())

    def count_request(self, key: str) -> None:
        self.requests[key] += 1

    async def wait(self, seconds: float) -> None:
        """Real waiting that ends early when the server stops."""
        if seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def authenticate(self, request: web.Request) -> str:
        """The user a request is authenticated as; raises `ApiError` 401 as VMS answers."""
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() == "api-token" and value:
            if hmac.compare_digest(value, self.token):
                return self.user
            if value in self._expired_tokens:
                raise ApiError(401, {"detail": "Token has expired."})
            raise ApiError(401, {"detail": "Invalid token."})
        if scheme.lower() == "basic" and value:
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (ValueError, UnicodeDecodeError) as exc:
                raise ApiError(401, {"detail": "Invalid basic header."}) from exc
            if hmac.compare_digest(user, self.user) and hmac.compare_digest(password, self.password):
                return user
            raise ApiError(401, {"detail": "Invalid username/password."})
        raise ApiError(401, {"detail": "Authentication credentials were not provided."},
                       {"WWW-Authenticate": 'Basic realm="api"'})

    def _clock_step(self, seconds: float) -> None:
        self.wall_offset_seconds += seconds
        log.info("simulator.clock_stepped", seconds=seconds, wall_offset_seconds=self.wall_offset_seconds)
        for hook in list(self.on_clock_step):
            hook(seconds)
