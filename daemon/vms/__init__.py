"""quotapilot.daemon.vms: the only vastpy boundary — everything that talks to a VAST VMS.

- `transport.py`: the vastpy client (TLS, kept-alive pool, timeouts), the thread pool, retries
  under the one `RetryPolicy`, paging;
- `errors.py`: `VmsUnavailable` / `VmsRefused` and `classify` (vastpy/urllib3 errors → ours);
- `validation.py`: pure rules a VMS record must pass to become an `Observation`;
- `collector.py`: `VmsPoller`, one poll of one cluster → `PollResult`;
- `writer.py`: `VmsWriter`, the actuator's and API's quota/view/policy calls.

May import: the stdlib, vastpy, urllib3, `quotapilot.forecasting.types`, and from the daemon only
`clock`, `errors`, `logs`, `settings` and `runtime` (`retry`, `cycle`, `supervisor`). Nothing else
in quotapilot imports vastpy.
"""
