"""pit's control plane: what `pit status`, `pit logs` and `pit profile-inspector` read from
live hosts (`client`, `status_watch`, `worker_logs`) and what hosts serve (`server`)."""
