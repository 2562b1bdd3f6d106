"""Templates that `pit gen adapter` renders into a user's project (runtime/scaffold.py).

This folder is their source in the repo; the wheel ships the ``*.tmpl`` files inside the CLI
package as ``snakecli/templates/`` (see pyproject.toml), so nothing named
``adapters_template`` lands at the top of site-packages.
"""
