"""How quotapilot reaches a VMS: the vastpy client, TLS, the thread pool, retries and paging.

vastpy is synchronous and, as shipped, opens a new TCP+TLS connection per request with no timeout
and no verification unless given a CA file. `VmsClient` keeps vastpy's public surface (the
constructor, `client["quotas"]` child clients, `get/post/patch`, `RESTFailure`) and replaces only
`request`: a timeout per request, no hidden urllib3 retries (ours honour `Retry-After`),
connections kept alive (`VmsHttpsConnection`: a failed TLS handshake says so, since it sent
nothing), and the failed response's headers kept on the `RESTFailure` (`.headers`).
It reads no private attribute of vastpy: the connection parameters are the constructor's
arguments, kept by our own `__init__` (vastpy builds child clients with `self.__class__(...)`,
passing them all as keywords; `tests/daemon/test_vms_transport.py` holds it to that).

`VmsTransport` runs each blocking call in a bounded thread pool shared by all clusters, retrying
temporary failures under the one `RetryPolicy` (`[vast] max_retries`, `backoff_base_seconds`
doubling up to `backoff_max_seconds`, jittered; a `Retry-After` waits at least that, capped at
`backoff_max_seconds`), and lists resources page by page.

TLS is always verified: against `ca_file` when configured, else against the system trust store.
vastpy's default without `cert_file` is *no verification at all*; the only way to get that here is
`insecure_skip_tls_verify = true`, which is logged as a warning every time a transport starts.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import ssl
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
import vastpy

from quotapilot.daemon.clock import Clock
from quotapilot.daemon.logs import TransitionLog, get_logger
from quotapilot.daemon.runtime.retry import RetryPolicy
from quotapilot.daemon.runtime.supervisor import sleep_unless
from quotapilot.daemon.settings import ClusterSettings, VastSettings
from quotapilot.daemon.vms.errors import TlsHandshakeFailed, TruncatedPage, VmsRefused, VmsUnavailable, classify

log = get_logger(__name__)

T = TypeVar("T")

LISTING_RESTARTS = 2
"""How many times `list_all` starts a listing over whose pages moved under it (at most
`max_retries`): one restart usually finds a moment of calm; on a cluster busy all the time none
does, and each one costs a whole listing."""

ClientFactory = Callable[[ClusterSettings, float, int], Any]
"""`(cluster, timeout_seconds, pool_size) -> client`: `make_client`, or a fake in tests."""


# ------------------------------------------------------------------------------ vastpy client
@dataclass(frozen=True, slots=True)
class Endpoint:
    """A client's connection parameters: exactly the keywords of `vastpy.VASTClient(...)`."""

    address: str
    url: str
    version: str | None
    tenant: str | None
    token: str | None
    user: str | None
    password: str | None
    cert_file: str | None
    cert_server_name: str | None

    @property
    def request_url(self) -> str:
        version_path = f"/{self.version}" if self.version else ""
        return f"https://{self.address}/{self.url}{version_path}/"

    def headers(self) -> dict[str, str]:
        if self.token:
            headers = {"authorization": f"Api-Token {self.token}"}
        else:
            headers = urllib3.make_headers(basic_auth=f"{self.user or ''}:{self.password or ''}")
        if self.tenant:
            headers["X-Tenant-Name"] = self.tenant
        return headers


class VmsHttpsConnection(urllib3.connection.HTTPSConnection):
    """urllib3's HTTPS connection, saying when its TLS handshake failed (`TlsHandshakeFailed`):
    urllib3 wraps a handshake's `ssl.SSLError` in the same `SSLError` as a record that fails
    while the answer is read, after the request went out. `connect` is where urllib3 makes the
    TCP connection (failing as its own `NewConnectionError` / `ConnectTimeoutError`, left as they
    are) and then the handshake, before any byte of the request: an `OSError` out of it (what
    `ssl` raises, a reset, a timeout) is the handshake's."""

    def connect(self) -> None:
        try:
            super().connect()
        except OSError as exc:
            raise TlsHandshakeFailed(exc) from exc


class VmsHttpsPool(urllib3.HTTPSConnectionPool):
    """urllib3's HTTPS pool, on `VmsHttpsConnection`s."""

    ConnectionCls = VmsHttpsConnection


class VmsClient(vastpy.VASTClient):  # type: ignore[misc]  # vastpy ships no type hints
    """vastpy's client with what a daemon needs (see the module docstring). The settings are class
    attributes because vastpy builds child clients with `self.__class__(...)`; `make_client` makes
    one class per cluster."""

    timeout_seconds: float = 30.0
    verify_system_trust: bool = False
    pool_size: int = 4
    pools: dict[str, urllib3.PoolManager]
    """One connection pool per client class (i.e. per cluster), shared by its child clients and
    the pool threads (urllib3 pools are thread-safe): a new TCP+TLS connection per request costs
    more than the request itself."""

    def __init__(self, user: str | None = None, password: str | None = None, address: str | None = None,
                 url: str = "api", cert_file: str | None = None, cert_server_name: str | None = None,
                 tenant: str | None = None, token: str | None = None, version: str | None = "latest") -> None:
        super().__init__(user=user, password=password, address=address, url=url, cert_file=cert_file,
                         cert_server_name=cert_server_name, tenant=tenant, token=token, version=version)
        # vastpy validated these (address given, exactly one of token / user+password)
        self.endpoint = Endpoint(address=str(address), url=url, version=version, tenant=tenant, token=token,
                                 user=user, password=password, cert_file=cert_file,
                                 cert_server_name=cert_server_name)

    def _pool_manager(self) -> urllib3.PoolManager:
        pools = type(self).pools
        manager = pools.get("vms")
        if manager is None:
            common: dict[str, Any] = {"timeout": urllib3.Timeout(total=self.timeout_seconds),
                                      "retries": False, "maxsize": self.pool_size}
            endpoint = self.endpoint
            if endpoint.cert_file:
                manager = urllib3.PoolManager(ca_certs=endpoint.cert_file,
                                              server_hostname=endpoint.cert_server_name, **common)
            elif self.verify_system_trust:
                manager = urllib3.PoolManager(ssl_context=system_trust_context(), **common)
            else:  # insecure_skip_tls_verify: explicit, warned about at start
                manager = urllib3.PoolManager(cert_reqs="CERT_NONE", **common)
                urllib3.disable_warnings(category=urllib3.exceptions.InsecureRequestWarning)
            # a public attribute urllib3 sets per manager "so other PoolManagers can override them"
            manager.pool_classes_by_scheme = {**manager.pool_classes_by_scheme, "https": VmsHttpsPool}
            manager = pools.setdefault("vms", manager)
        return manager

    def request(self, method: str, fields: dict[str, Any] | None = None,
                data: dict[str, Any] | None = None) -> Any:
        """vastpy's `request`, on a kept-alive pool with a timeout and no hidden retries."""
        endpoint = self.endpoint
        headers = endpoint.headers()
        body = None
        if data:
            headers["Content-Type"] = "application/json"
            body = json.dumps(data).encode("utf-8")
        field_list: list[tuple[str, Any]] | None = None
        if fields:
            field_list = []
            for key, value in fields.items():
                if isinstance(value, list):
                    field_list.extend((key, item) for item in value)
                else:
                    field_list.append((key, value))
        response = self._pool_manager().request(method, endpoint.request_url, headers=headers,
                                                fields=field_list, body=body)
        if response.status not in vastpy.SUCCESS_CODES:
            failure = vastpy.RESTFailure(method, endpoint.url, field_list, response.status, response.data)
            failure.headers = dict(response.headers)
            raise failure
        payload = response.data
        if "application/json" in response.headers.get("Content-Type", "") and payload:
            return json.loads(payload.decode("utf-8"))
        return payload


def system_trust_context() -> ssl.SSLContext:
    """Verification against the system's CA store; certifi's bundle when the system has none (a
    slim container). Never an unverified context."""
    context = ssl.create_default_context()
    if not context.cert_store_stats().get("x509_ca"):
        try:
            import certifi
        except ImportError:
            return context
        context.load_verify_locations(cafile=certifi.where())
    return context


def make_client(cluster: ClusterSettings, timeout_seconds: float, pool_size: int = 4) -> VmsClient:
    """A vastpy client for one cluster, verifying TLS unless explicitly told not to; up to
    `pool_size` connections are kept alive."""
    resolved = cluster.resolved_ca_file()
    ca_file = None if resolved is None else str(resolved)
    client_class: type[VmsClient] = type("VmsClient", (VmsClient,), {
        "timeout_seconds": timeout_seconds,
        "verify_system_trust": ca_file is None and not cluster.insecure_skip_tls_verify,
        "pool_size": pool_size,
        "pools": {},
    })
    if cluster.insecure_skip_tls_verify:
        ca_file = None
    credentials: dict[str, Any]
    token = cluster.resolved_token()
    if token is not None:
        credentials = {"token": token}
    else:
        credentials = {"user": cluster.user, "password": cluster.resolved_password()}
    return client_class(address=cluster.address, cert_file=ca_file, tenant=cluster.tenant,
                        version=cluster.api_version, **credentials)


@dataclass(slots=True)
class RetriesSpent:
    """The retries one request has had so far, shared by the calls that make it again (a
    listing's page, after a restart), so a restart does not renew them."""

    count: int = 0


def retry_policy(vast: VastSettings) -> RetryPolicy:
    """The `[vast]` settings as the one retry policy: exponential from `backoff_base_seconds`,
    at most `backoff_max_seconds` (also the cap on a `Retry-After`), `max_retries` retries."""
    return RetryPolicy(attempts=vast.max_retries + 1, base_seconds=vast.backoff_base_seconds,
                       max_seconds=vast.backoff_max_seconds, deadline_seconds=None,
                       retry_after_max_seconds=vast.backoff_max_seconds)


# ------------------------------------------------------------------------------ the transport
class VmsTransport:
    """One cluster's calls to its VMS, each in the shared pool, with retries and paging. Raises
    `VmsUnavailable` / `VmsRefused` once the retry policy gives up (at once for a refusal)."""

    def __init__(self, cluster: ClusterSettings, vast: VastSettings, clock: Clock, executor: Executor, *,
                 rng: random.Random | None = None, client_factory: ClientFactory = make_client,
                 stopping: asyncio.Event | None = None) -> None:
        self.cluster = cluster
        self.name = cluster.name
        self.policy = retry_policy(vast)
        self._vast = vast
        self._clock = clock
        self._executor = executor
        self._rng = rng or random.Random()
        self._stopping = stopping if stopping is not None else asyncio.Event()
        """Set on shutdown: retries stop waiting and the last error is raised at once."""
        self._client_factory = client_factory
        self._client = client_factory(cluster, vast.request_timeout_seconds, vast.threads)
        self._credential = self._current_credential()
        self.requests_made = 0
        self.listings_unsettled = 0
        """Listings taken while their `count` still moved after the restarts (`list_all`)."""
        self._unsettled_log = TransitionLog(log, "listing", failed_level="info", failed_event="listing.unsettled",
                                            recovered_event="listing.settled", once_per_outage=True)

    def log_tls_mode(self) -> None:
        """Say how this transport verifies the VMS; a loud warning when it does not."""
        if self.cluster.insecure_skip_tls_verify:
            log.warning("tls.verification_disabled", cluster=self.name, address=self.cluster.address,
                        hint="insecure_skip_tls_verify is set: the VMS certificate is NOT verified")
        else:  # how it will be checked: the handshake itself is the first poll's (`poll.succeeded` / `poll.failed`)
            trust = "system store" if self.cluster.ca_file is None else str(self.cluster.ca_file)
            log.info("tls.verification_on", cluster=self.name, address=self.cluster.address, trust=trust)

    async def call(self, what: str, fn: Callable[[Any], T], *, retries: RetriesSpent | None = None) -> T:
        """Run `fn(client)` (one blocking vastpy call) in the pool, retrying temporary failures.
        `fn` gets the current client, so a retry after a credential reload uses the new one.
        A refusal after an attempt whose outcome is unknown says so (`after_lost_answer`): for a
        write, that attempt may still land. `retries`: the retries already spent on this request
        by earlier calls (a listing's page, fetched again after a restart), and kept up to date."""
        loop = asyncio.get_running_loop()
        spent = retries if retries is not None else RetriesSpent()
        attempt = spent.count
        lost_answer = False
        while True:
            self.requests_made += 1
            try:
                return await loop.run_in_executor(self._executor, fn, self._client)
            except Exception as exc:
                error = classify(exc)
                if isinstance(error, VmsRefused):
                    if error.reason == "auth" and self._reload_credentials():
                        continue  # the token (or password) file was rotated: try the new one at once
                    error.after_lost_answer = lost_answer
                    raise error from exc
                lost_answer = lost_answer or error.outcome_unknown
                if self.policy.exhausted(attempt):
                    raise error from exc
                delay = self.policy.delay(attempt, error.delay, self._rng)
                log.debug("request.retried", cluster=self.name, request=what, attempt=attempt + 1,
                          delay_seconds=round(delay, 3), error=str(error)[:200])
                attempt += 1
                spent.count = attempt
                if not await sleep_unless(self._clock, delay, self._stopping):
                    raise error from exc

    async def get(self, resource: str, **params: Any) -> Any:
        """`GET /<resource>/` with query parameters."""
        return await self.call(f"GET {resource}", lambda client: client[resource].get(**params))

    async def list_all(self, resource: str, *, settled_only: bool = False, **filters: Any) -> list[Any]:
        """Every object of a list endpoint, following `next` page by page. A page shorter than
        the envelope's `count` implies, or one that ends the listing (no `next`) with fewer objects
        listed than `count`, is refetched like any temporary failure (`truncated` once the retries
        are spent): a listing cut short is no listing, since the caller concludes from the quotas
        it lacks. Entries that are no object are kept, for the caller to drop and count as
        malformed.

        Pages are offsets into a state that can change between them: an object deleted (created)
        ahead of the pages read shifts the rest back (on), so one that still exists is on no page
        read (or on two). A `count` that moved between the pages of a listing, or a later page gone
        (404), says so: the listing starts again from page 1, at once (the VMS is not in trouble;
        waiting would not make the change stop), up to `LISTING_RESTARTS` times. A listing that
        still moves after them is read to its end and taken, repeats dropped (`_unique_by_id`):
        on a busy cluster (a pipeline creating a quota per job) no listing holds still, and failing
        the poll would leave every quota without data, where a quota shifted off the pages misses
        one poll, which the presence grace absorbs. Such a listing is counted
        (`listings_unsettled`) and logged once per streak (`listing.unsettled`, then
        `listing.settled`). A later page still gone after the restarts fails as the refusal it is
        (`not_found`). Restarts do not renew the retries: each page number has the retry policy's
        retries for the whole listing. A listing that holds still costs one request per page. A
        deletion and a creation between the same two pages leave `count` as it was, and go
        unseen: a quota missing from one poll waits out the presence grace.

        `settled_only`: a lookup that decides a write (the writer's: is the view there, is the
        quota) takes no unsettled listing — the object a page shift hid would be created again —
        and fails as `truncated` when the last listing's `count` moves too; the caller tries again
        next cycle. Such lookups filter by path where they can: a page, which rarely moves."""
        restarts = min(LISTING_RESTARTS, self._vast.max_retries)
        retries: defaultdict[int, RetriesSpent] = defaultdict(RetriesSpent)
        restart = 0
        while True:
            listed = await self._list_once(resource, filters, retries, may_restart=restart < restarts,
                                           settled_only=settled_only)
            if listed is not None:
                break
            if restart == restarts:  # settled_only, and the last listing moved too
                raise VmsUnavailable(f"GET {resource}: the listing changed while paging, {restarts + 1} times in a row",
                                     reason="truncated")
            restart += 1
        items, settled = listed
        streak = (resource, *sorted(filters))  # the poll's listing apart from the writer's lookups
        if settled:
            self._unsettled_log.ok(streak, cluster=self.name, resource=resource)
        else:
            self.listings_unsettled += 1
            self._unsettled_log.failed(streak, f"count moved while paging, {restarts + 1} listings in a row",
                                       cluster=self.name, resource=resource, listed=len(items))
        return items

    async def _list_once(self, resource: str, filters: Mapping[str, Any],
                         retries: defaultdict[int, RetriesSpent], *,
                         may_restart: bool, settled_only: bool) -> tuple[list[Any], bool] | None:
        """One listing from page 1, as (objects, settled): settled when every page had the same
        `count`. None when the pages do not describe one state and it may restart (or is
        `settled_only`: no unsettled listing is taken); otherwise a listing whose `count` moves is
        read to its end (at most twice the pages its first `count` allows: a count that grows by a
        page per page would never end)."""
        page_size = self._vast.page_size
        items: list[Any] = []
        page, count, moved = 1, 0, False
        while True:
            fetch = functools.partial(_fetch_page, resource, page, page_size, len(items), filters)
            try:
                body = await self.call(f"GET {resource} page {page}", fetch, retries=retries[page])
            except VmsRefused as exc:
                if page == 1 or exc.status != 404 or not may_restart:
                    raise
                log.debug("listing.restarted", cluster=self.name, resource=resource, page=page, count=count,
                          error=str(exc)[:200])
                return None  # the page was there when `count` was read
            if isinstance(body, list):  # a VMS that ignores paging answers the plain array
                return list(body), True
            if page == 1:
                count = body["count"]
            elif body["count"] != count and not moved:
                log.debug("listing.restarted" if may_restart else "listing.moved", cluster=self.name,
                          resource=resource, page=page, count=count, new_count=body["count"])
                if may_restart or settled_only:
                    return None
                moved = True
            items.extend(body["results"])
            if not body.get("next") or not body["results"]:
                return _unique_by_id(items), not moved
            page += 1
            pages_allowed = count // page_size + 2
            if moved and page > 2 * pages_allowed:
                return _unique_by_id(items), False
            if not moved and page > pages_allowed:
                raise VmsUnavailable(f"GET {resource}: more pages than count={count} allows",
                                     reason="malformed")

    def _current_credential(self) -> str | None:
        try:
            return self.cluster.resolved_token() or self.cluster.resolved_password()
        except OSError:
            return None

    def _reload_credentials(self) -> bool:
        """After a 401: when the secret file now holds another credential, use it (True)."""
        if self.cluster.token_file is None and self.cluster.password_file is None:
            return False
        credential = self._current_credential()
        if credential is None or credential == self._credential:
            return False
        self._client = self._client_factory(self.cluster, self._vast.request_timeout_seconds,
                                            self._vast.threads)
        self._credential = credential
        log.info("credentials.reloaded", cluster=self.name)
        return True


def _unique_by_id(items: list[Any]) -> list[Any]:
    """A listing without the repeats of a page shift that `count` does not show (between the
    same two pages, an object created on a page already read and another deleted further on: the
    next page starts with the last object of the page before): a record with an id already listed
    and the same name and path. Another record under that id is kept (the caller drops every
    record of a contested id as malformed, counted)."""
    seen: set[tuple[Any, Any, Any]] = set()
    unique = []
    for item in items:
        key = (item.get("id"), item.get("name"), item.get("path")) if isinstance(item, dict) else None
        if key is not None and key[0] is not None and key in seen:
            continue
        if key is not None:
            seen.add(key)
        unique.append(item)
    return unique


def _fetch_page(resource: str, page: int, page_size: int, listed_before: int, filters: Mapping[str, Any],
                client: Any) -> Any:
    """GET one page and check it (in the pool thread, so a bad page is retried like any failure);
    `listed_before`: the objects the pages before it held."""
    body = client[resource].get(page=page, page_size=page_size, **filters)
    if isinstance(body, list):
        return body
    if not isinstance(body, dict) or not isinstance(body.get("results"), list) \
            or isinstance(body.get("count"), bool) or not isinstance(body.get("count"), int):
        raise ValueError(f"page {page}: not a page envelope (results, count)")
    count, listed = body["count"], len(body["results"])
    expected = min(page_size, max(0, count - (page - 1) * page_size))
    if listed < expected:
        raise TruncatedPage(f"page {page}: {listed} objects, count={count} implies {expected}")
    if (not body.get("next") or not listed) and listed_before + listed < count:
        # the last page (a VMS or proxy that dropped the `next` link) of a listing that lacks
        # objects: its missing quotas would vanish from a good poll and be resolved as removed
        raise TruncatedPage(f"page {page}: no next page after {listed_before + listed} objects, count={count}")
    return body


def as_object(body: Any, what: str) -> dict[str, Any]:
    """`body` when it is a JSON object, else `VmsUnavailable("malformed")`."""
    if not isinstance(body, dict):
        raise VmsUnavailable(f"expected a {what} object, got {type(body).__name__}", reason="malformed")
    return body
