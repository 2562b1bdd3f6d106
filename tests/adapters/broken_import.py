"""An adapter module that cannot be imported: the fork server's load failure, on purpose."""

raise ImportError("pit tests: this adapter module is broken on purpose")
