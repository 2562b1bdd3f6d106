"""Files that `pit gen adapter` renders into a user's project (the command arrives with the
environments/scaffold issue; this package only reserves its place in the layout)."""
