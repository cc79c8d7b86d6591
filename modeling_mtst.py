"""`modeling_mtst`: the MTST model (`MTSTModel` and the per-task views), under the design card's top-level name.

The source is `mtst/remote/modeling_mtst.py`, the file that travels with every saved model (its `auto_map` names it
`modeling_mtst`). This module *is* that module: importing `modeling_mtst` gives the same module object as
`mtst.remote.modeling_mtst`, so old imports (`from modeling_mtst import MTSTModel`) keep working and both names share
one set of classes.
"""

import sys

from mtst.remote import modeling_mtst as _source

sys.modules[__name__] = _source
