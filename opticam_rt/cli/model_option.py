"""``--model``: the PyTorch model behind a bundle, for ``--backend torch`` and bench's reference."""

from __future__ import annotations

import click

model_option = click.option(
    "--model", "model_spec", default=None, metavar="SPEC",
    help="The PyTorch model of the bundle, for the torch backend (a built-in name, pkg.module:factory "
         "or file.py:factory). Without it a built-in name in the manifest is used; code the manifest "
         "names is imported only with OPTICAM_RT_TRUST_BUNDLE_CODE=1 (a bundle is data).",
)
