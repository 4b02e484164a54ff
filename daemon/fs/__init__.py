"""Filesystem targets (`[[filesystems]]`): mounted tiers (hot NVMe, warm SATA, cold NAS) watched
like quotas.

- `poller.py`: `statvfs` per mount in a worker thread with a timeout (a hung NFS mount becomes
  "unreachable" and never blocks the loop or the other mounts); a mount point that is not one any
  more, or a sample from another filesystem (the mount went away), is unreachable too, and an
  implausible one is held a poll;
- `collector.py`: `FilesystemCollector`, the pseudo-cluster `filesystems` the daemon cycles through
  the same stages as a VMS cluster (observations of kind `filesystem`, with a `tier`);
- `alerts.py`: per-tier thresholds and the unreachable alert; `growth.py`: growth as a configured
  command (no shell, timeout, audited, dry run in observe mode) or a recommendation.

May import: the top-level modules (settings, clock, errors, logs), `runtime.cycle`, the store's
action audit and overrides, the quota growth stage's shared pieces (`stages.growth`: decision
events, the kill switch), the pure sample rules of `vms.validation` (`plausible_rise`, as quota
samples are judged), `forecasting`, `alerts` data types. Never the daemon, its wiring or HTTP.
"""
