"""`configuration_mtst`: MTST's model configuration (`MTSTConfig`), under the design card's top-level name.

The source is `mtst/remote/configuration_mtst.py`, the file that travels with every saved model (its `auto_map` names
it `configuration_mtst`). This module *is* that module: importing `configuration_mtst` gives the same module object as
`mtst.remote.configuration_mtst`, so old imports (`from configuration_mtst import MTSTConfig`) keep working and both
names share one set of classes.
"""

import sys

from mtst.remote import configuration_mtst as _source

sys.modules[__name__] = _source
