"""Host plumbing a pool runs on, apart from the pool's own logic: the host instance (run dir,
registry rows, host.sock with host tools and the control service), the relay of workers'
telemetry, and the private event-loop thread behind the sync API."""
